"""Version ETags (R4 http.html#versioning): ``W/"3"`` names version 3."""

from __future__ import annotations

import re
from typing import Any

from ehr.errors import Category, EhrError

_ETAG = re.compile(r'^(?:W/)?"(\d{1,9})"$')


def etag_version(value: Any, header: str) -> int | None:
    """The version an If-Match (or a bundle entry's ifMatch) names; None when absent."""
    if value is None:
        return None
    match = _ETAG.match(str(value).strip())
    if match is None:
        raise EhrError(Category.INVALID, f'{header} must be a version ETag such as W/"3"')
    return int(match[1])
