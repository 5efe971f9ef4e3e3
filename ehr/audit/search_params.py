"""AuditEvent search parameters (R4 auditevent.html#search, search.html) parsed into criteria over the
searchable columns of ``audit_event``. Pure: no IO, no SQL (ehr/audit/review.py writes the SQL).

Supported: ``_id``, ``action``, ``address``, ``agent``, ``date``, ``entity``, ``outcome``, ``patient``,
``subtype``; and ``_count``, ``_cursor`` (paging), ``_format``, ``_sort=-date``, ``_total``.
Repeating a parameter means AND, a comma inside one means OR (search.html#combining). No modifiers.
Error messages name the parameter, never the value (a value may be ePHI).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from ehr import cursor
from ehr.audit.events import REST_INTERACTIONS
from ehr.errors import Category, EhrError

# The subtype systems, as ehr/audit/events.py writes them.
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
OTHER_SUBTYPE_SYSTEM = "urn:ehr:audit-subtype"
_ACTION_SYSTEM = "http://hl7.org/fhir/audit-event-action"
_OUTCOME_SYSTEM = "http://hl7.org/fhir/audit-event-outcome"
_ACTIONS = frozenset("CRUDE")
_OUTCOMES = frozenset({"0", "4", "8", "12"})
_WIDTH = 64  # patient, entity_type and entity_id are stored cut to this width (ehr/audit/log.py)
_MAX_PARAMETERS = 50
_MAX_VALUES = 50
_REFERENCE = re.compile(r"^(?:.*/)?([A-Z][A-Za-z]{0,63})/([^/]+?)(?:/_history/[^/]+)?$")
_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2}))?)?)?$"
)
_PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
_SECOND = 1_000_000
_DAY = 86_400 * _SECOND
_EPOCH = date(1970, 1, 1).toordinal()
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,39}$")


@dataclass(frozen=True, slots=True)
class Match:
    """``column`` equals one of ``values`` (none: matches nothing); with ``exclude``, none of them."""

    column: str
    values: tuple[str, ...]
    exclude: bool = False


@dataclass(frozen=True, slots=True)
class Period:
    """``recorded_us`` in [low, high) (None: unbounded); with ``outside``, not in it."""

    low: int | None
    high: int | None
    outside: bool = False


@dataclass(frozen=True, slots=True)
class Entity:
    """The event is about ``res_type``/``res_id`` (any type when None)."""

    res_type: str | None
    res_id: str


Condition = Match | Period | Entity
Criterion = tuple[Condition, ...]  # any of them (the comma-separated values of one parameter)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended, newest first: the keyset (recorded_us, seq) of its last event."""

    recorded_us: int
    seq: int


@dataclass(frozen=True, slots=True)
class Paging:
    default: int = 50
    maximum: int = 500


@dataclass(frozen=True, slots=True)
class AuditQuery:
    criteria: tuple[Criterion, ...]  # all of them
    count: int
    after: Position | None
    applied: tuple[tuple[str, str], ...]  # the parameters used (not _count, _cursor), for links


def bad(message: str) -> EhrError:
    return EhrError(Category.INVALID, message)


def parse_search(params: Sequence[tuple[str, str]], *, lenient: bool, paging: Paging) -> AuditQuery:
    """``GET [base]/AuditEvent?...``; unknown parameters are refused unless ``lenient``."""
    return _parse(params, _SEARCH, lenient, paging, ())


def parse_access_log(
    patient: str, params: Sequence[tuple[str, str]], *, lenient: bool, paging: Paging
) -> AuditQuery:
    """``GET [base]/Patient/{id}/$access-log?start=&end=``: the patient's events in the period."""
    return _parse(params, _ACCESS_LOG, lenient, paging, ((Match("patient", (patient[:_WIDTH],)),),))


def encode_cursor(position: Position) -> str:
    return cursor.encode([position.recorded_us, position.seq])


def decode_cursor(token: str) -> Position:
    try:
        recorded_us, seq = cursor.decode(token)
    except ValueError:
        raise bad("_cursor is not a cursor from this server") from None
    if type(recorded_us) is not int or type(seq) is not int:  # not bool either
        raise bad("_cursor is not a cursor from this server")
    if not all(-(2**63) <= n < 2**63 for n in (recorded_us, seq)):  # BIGINT columns
        raise bad("_cursor is not a cursor from this server")
    return Position(recorded_us, seq)


def _parse(
    params: Sequence[tuple[str, str]],
    table: dict[str, Callable[[str, str], Condition]],
    lenient: bool,
    paging: Paging,
    fixed: tuple[Criterion, ...],
) -> AuditQuery:
    if len(params) > _MAX_PARAMETERS:
        raise bad(f"at most {_MAX_PARAMETERS} parameters")
    criteria, applied = list(fixed), []
    count, after = paging.default, None
    for key, value in params:
        name, colon, _modifier = key.partition(":")
        known = name in table or name in _CONTROL
        if colon and known:
            raise bad(f"{name}: modifiers are not supported")
        if not known:
            if lenient:
                continue
            shown = f" '{key}'" if _NAME.match(key) else ""
            raise bad(f"unknown search parameter{shown} (send 'Prefer: handling=lenient' to ignore it)")
        if value == "":
            continue  # an empty parameter is ignored (search.html)
        if name == "_count":
            count = _count(value, paging)
            continue
        if name == "_cursor":
            after = decode_cursor(value)
            continue
        if name in table:
            criteria.append(_any_of(name, value, table[name]))
        else:
            _control(name, value)
        applied.append((name, value))
    return AuditQuery(tuple(criteria), count, after, tuple(applied))


def _any_of(name: str, value: str, parse: Callable[[str, str], Condition]) -> Criterion:
    values = _split(value, ",")
    if len(values) > _MAX_VALUES:
        raise bad(f"{name}: at most {_MAX_VALUES} values")
    return tuple(parse(name, v) for v in values)


def _count(value: str, paging: Paging) -> int:
    if not value.isdigit() or not value.isascii():
        raise bad("_count must be a non-negative integer")
    digits = value.lstrip("0")
    return paging.maximum if len(digits) > 9 else min(int(digits or "0"), paging.maximum)


def _control(name: str, value: str) -> None:
    """Result parameters that change nothing here, but only in the ways this server can honour."""
    if name == "_sort" and value != "-date":
        raise bad("_sort: only -date (newest first) is supported")
    if name == "_total" and value not in ("none", "estimate", "accurate"):
        raise bad("_total must be none, estimate or accurate")


# -- the parameters ------------------------------------------------------------------------------


def _id(_name: str, value: str) -> Condition:
    return Match("id", (_unescape(value),))


def _action(name: str, value: str) -> Condition:
    return _code(name, value, "action", _ACTION_SYSTEM, _ACTIONS)


def _outcome(name: str, value: str) -> Condition:
    return _code(name, value, "outcome", _OUTCOME_SYSTEM, _OUTCOMES)


def _code(name: str, value: str, column: str, system: str, codes: frozenset[str]) -> Condition:
    given, code = _token(value)
    if given not in (None, system):
        return Match(column, ())  # a code of another system: no event has it
    if code not in codes:
        raise bad(f"{name} must be one of {' '.join(sorted(codes, key=lambda c: (len(c), c)))}")
    return Match(column, (code,))


def _subtype(_name: str, value: str) -> Condition:
    """A code, or system|code with the system events.py gives it: restful-interaction for REST
    interactions, urn:ehr:audit-subtype for the rest; ``system|`` is any code of that system."""
    system, code = _token(value)
    rest = sorted(REST_INTERACTIONS)
    if system in (INTERACTION_SYSTEM, OTHER_SUBTYPE_SYSTEM) and code == "":
        return Match("subtype", tuple(rest), exclude=system == OTHER_SUBTYPE_SYSTEM)
    if system is None or system == (INTERACTION_SYSTEM if code in REST_INTERACTIONS else OTHER_SUBTYPE_SYSTEM):
        return Match("subtype", (code,))
    return Match("subtype", ())


def _address(_name: str, value: str) -> Condition:
    system, code = _token(value)
    return Match("address", (code,) if system in (None, "") else ())


def _agent(name: str, value: str) -> Condition:
    return Match("agent", (_reference(name, value)[1],))


def _patient(name: str, value: str) -> Condition:
    res_type, res_id = _reference(name, value)
    if res_type not in (None, "Patient"):
        raise bad(f"{name} must be a Patient id or reference")
    return Match("patient", (res_id[:_WIDTH],))


def _entity(name: str, value: str) -> Condition:
    res_type, res_id = _reference(name, value)
    return Entity(res_type[:_WIDTH] if res_type else None, res_id[:_WIDTH])


def _reference(name: str, value: str) -> tuple[str | None, str]:
    """A plain id, or a reference ``[url/]Type/id[/_history/n]``: (type or None, id)."""
    value = _unescape(value)
    if "/" not in value:
        return None, value
    match = _REFERENCE.match(value)
    if match is None:
        raise bad(f"{name} must be an id or a Type/id reference")
    return match[1], match[2]


def _token(value: str) -> tuple[str | None, str]:
    """``code``, ``system|code``, ``|code`` (no system: "") or ``system|`` (any code)."""
    parts = _split(value, "|")
    if len(parts) == 1:
        return None, _unescape(parts[0])
    if len(parts) != 2:
        raise bad("a token is code or system|code")
    return _unescape(parts[0]), _unescape(parts[1])


def _split(value: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not escaped with a backslash (search.html#escaping)."""
    parts, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current) + ("\\" if escaped else ""))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\,$|])", r"\1", value)


# -- date (search.html#date): the value's precision makes it a range -------------------------------


def _date(name: str, value: str) -> Condition:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    text = value[2:] if value[:2] in _PREFIXES else value
    if prefix == "ap":
        raise bad(f"{name}: the ap prefix is not supported")
    low, high = date_range(name, text)
    return {
        "eq": Period(low, high),
        "ne": Period(low, high, outside=True),
        "lt": Period(None, low),
        "eb": Period(None, low),
        "le": Period(None, high),
        "gt": Period(high, None),
        "sa": Period(high, None),
        "ge": Period(low, None),
    }[prefix]


def _start(name: str, value: str) -> Condition:
    return Period(date_range(name, value)[0], None)


def _end(name: str, value: str) -> Condition:
    return Period(None, date_range(name, value)[1])


def date_range(name: str, text: str) -> tuple[int, int]:
    """[low, high) in microseconds since the epoch for a FHIR date, dateTime or instant. A time
    needs a zone (FHIR dateTime); a date alone is taken in UTC, the log's own time zone."""
    match = _DATE.match(text)
    if match is None:
        raise bad(f"{name} must be a FHIR date or dateTime (with a time zone when it has a time)")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        start = date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        raise bad(f"{name} is not a calendar date") from None
    low = (start.toordinal() - _EPOCH) * _DAY
    if day is None:
        days = calendar.monthrange(start.year, start.month)[1] if month else 365 + calendar.isleap(start.year)
        return low, low + days * _DAY
    if hour is None:
        return low, low + _DAY
    if int(hour) > 23 or int(minute) > 59 or int(second or 0) > 59:
        raise bad(f"{name} is not a time of day")
    low += ((int(hour) * 60 + int(minute)) * 60 + int(second or 0)) * _SECOND - _offset(name, zone)
    if second is None:
        return low, low + 60 * _SECOND
    if fraction is None:
        return low, low + _SECOND
    digits = fraction[:6]
    low += int(digits.ljust(6, "0"))
    return low, low + (10 ** (6 - len(digits)) if len(fraction) <= 6 else 1)


def _offset(name: str, zone: str) -> int:
    if zone == "Z":
        return 0
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 14 or minutes > 59:
        raise bad(f"{name} has an invalid time zone")
    sign = -1 if zone[0] == "-" else 1
    return sign * (hours * 60 + minutes) * 60 * _SECOND


_SEARCH: dict[str, Callable[[str, str], Condition]] = {
    "_id": _id,
    "action": _action,
    "address": _address,
    "agent": _agent,
    "date": _date,
    "entity": _entity,
    "outcome": _outcome,
    "patient": _patient,
    "subtype": _subtype,
}
_ACCESS_LOG: dict[str, Callable[[str, str], Condition]] = {"start": _start, "end": _end}
_CONTROL = frozenset({"_count", "_cursor", "_format", "_sort", "_total"})
