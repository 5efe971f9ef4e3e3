"""The implicit range of a search value's precision (https://hl7.org/fhir/R4/search.html#prefix).

A date, dateTime or instant stands for the whole span its precision covers (``2020-03`` is March
2020); a decimal for the interval of half a unit in its last significant digit (``100`` is
[99.5, 100.5), ``100.0`` is [99.95, 100.05), ``1e2`` is [50, 150)). Both functions raise
``ValueError`` on anything that is not such a value; the caller names the parameter.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, localcontext

from ehr.fhir.search.dates import date_range as stored_range

_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,4})?", re.ASCII)
_EXACT = Context(prec=2_100, Emax=20_000, Emin=-20_000)  # room for any 1,024-character decimal


def date_range(text: str) -> tuple[int, int]:
    """``[low, high)`` in microseconds since the epoch (UTC); no zone means UTC. The same ranges the
    index stores (ehr/fhir/search/dates.py); a zone's "+" may arrive as a space (not percent-encoded)."""
    if text.startswith("0000"):
        raise ValueError("no such date")
    if len(text) > 19 and text[-6] == " ":
        text = text[:-6] + "+" + text[-5:]
    found = stored_range(text)
    if found is None:
        raise ValueError("not a date")
    return found


def decimal_range(text: str) -> tuple[Decimal, Decimal, Decimal]:
    """The value and ``[low, high)``: plus or minus half a unit in the last significant digit."""
    if _DECIMAL.fullmatch(text) is None:
        raise ValueError("not a decimal")
    value = Decimal(text)
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # unreachable: the regex admits finite numbers only
        raise ValueError("not a finite decimal")
    half = Decimal((0, (5,), exponent - 1))
    with localcontext(_EXACT):
        return value, value - half, value + half
