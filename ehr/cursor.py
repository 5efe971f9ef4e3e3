"""Opaque paging cursors: a short list of keyset values as unpadded base64url JSON."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence


def encode(values: Sequence[int | float | str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def decode(token: str) -> list[object]:
    """The values; ValueError on anything that is not a cursor's shape (the caller checks types)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError):
        raise ValueError("not a cursor") from None
    if not isinstance(values, list):
        raise ValueError("not a cursor")
    return values
