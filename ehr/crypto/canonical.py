"""Strict JSON parsing and canonical serialisation: RFC 8785 (JCS) with FHIR decimals kept lexically.

RFC 8785 §3.2.2.3 writes numbers as ECMAScript doubles; FHIR R4 (Datatypes, "decimal") says the
precision of a decimal is significant, so numbers are the one departure: ``int`` as decimal
digits and ``Decimal`` in its own lexical form (``1.50`` stays ``1.50``). Python ``float`` is
refused, since it has already lost the lexical form.

``canonical_json`` encodes with the stdlib C encoder, which already escapes strings as
RFC 8785 §3.2.2.2 requires, and checks its output for the few things that encoder gets wrong for
us (floats, non-``str`` keys, non-BMP keys whose UTF-16 order differs); any doubt falls back to
the plain Python encoder below, and a hypothesis test holds the two paths equal.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, NoReturn

MAX_DEPTH = 64

_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# Fast path (see _canonical_fast). JSON strings always escape U+0000..U+001F, so these
# control characters used as separators mark structure exactly.
_KEY_SEP, _ITEM_SEP = "\x01", "\x02"
_RESTORE_SEPARATORS = bytes.maketrans(b"\x01\x02", b":,")
_SKELETON = bytes.maketrans(b"\x02eE", b"\x01..")  # "\x01": a value starts; ".": a float's mark
_NUMBER_CHARS = b"0123456789+-"
_FLOAT_AFTER_SEPARATOR = re.compile(rb"\x01\.")
_FLOAT_FIRST_IN_ARRAY = re.compile(rb"\[-?\d+[.e]")  # a "[" inside a string only gives a false alarm
_NON_STR_KEY = re.compile(rb'\{"(?:[-\d]|true"|false"|null")')
_PLACEHOLDER = re.compile(rb'"\\u0000(\d+)\\u0000"')


class InvalidJSON(ValueError):
    """The input is not strict JSON; the message gives the reason and position, never content."""


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_json(data: bytes | str) -> Any:
    """Parse UTF-8 JSON strictly (RFC 8259 + RFC 7493 I-JSON): fractions/exponents as Decimal."""
    text = _decode(data)
    value = _loads(text)
    _check_value(text, value)
    return value


# Errors are raised outside the ``except`` blocks, so no exception holding the input is chained.


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        if data.startswith("\ufeff"):
            raise InvalidJSON("byte order mark is not allowed")
        match = _LONE_SURROGATE.search(data)
        if match:
            raise InvalidJSON(f"lone surrogate at char {match.start()}")
        return data
    if data.startswith(_BOM):
        raise InvalidJSON("byte order mark is not allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        problem = f"invalid UTF-8 at byte {err.start}"
    raise InvalidJSON(problem)


def _loads(text: str) -> Any:
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_int=_integer,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_object,
        )
    except InvalidJSON:
        raise
    except RecursionError:
        problem = f"nesting deeper than {MAX_DEPTH}"
    except json.JSONDecodeError as err:  # its msg is fixed text; the document is in err.doc
        problem = f"{err.msg.split(':', 1)[0]} at line {err.lineno} column {err.colno}"
    except ValueError:  # an integer beyond sys.get_int_max_str_digits()
        problem = "number too long"
    raise InvalidJSON(problem)


def _integer(text: str) -> int | Decimal:
    """An int, except "-0": no int keeps that sign, so it stays a Decimal like other lexical forms."""
    return Decimal(text) if text == "-0" else int(text)


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidJSON("NaN and Infinity are not JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise InvalidJSON("duplicate object key")
    return obj


def _check_value(text: str, value: Any) -> None:
    # Cheap guards first: fewer than MAX_DEPTH brackets cannot nest deeper than MAX_DEPTH.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise InvalidJSON(f"nesting deeper than {MAX_DEPTH}")
    if _SURROGATE_ESCAPE.search(text) and not _all_strings_valid(value):
        raise InvalidJSON("escaped lone surrogate")


def _depth(value: Any) -> int:
    if not isinstance(value, (dict, list)):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def _all_strings_valid(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if _LONE_SURROGATE.search(node):
                return False
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


# ---------------------------------------------------------------------------------------------
# Canonical serialisation


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical UTF-8 bytes, except numbers: ints as digits, Decimals lexically."""
    if isinstance(value, (dict, list, tuple)):
        fast = _canonical_fast(value)
        if fast is not None:
            return fast
    try:
        return _canonical_slow(value).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("lone surrogate in a string") from None


class _NeedsSlowPath(Exception):
    pass


def _canonical_fast(value: Any) -> bytes | None:
    """The stdlib C encoder's output, or None whenever it might differ from ``_canonical_slow``.

    The C encoder sorts keys by code point (equal to UTF-16 order only without non-BMP
    characters), quietly turns int/float/bool/None keys into strings and writes floats; each
    of these is caught here and sent to the slow path, which refuses or handles it.
    """
    decimals: list[bytes] = []

    def default(obj: object) -> str:
        if type(obj) is not Decimal:
            raise _NeedsSlowPath
        decimals.append(_decimal_text(obj).encode("ascii"))
        return f"\x00{len(decimals) - 1}\x00"

    encoder = json.JSONEncoder(
        ensure_ascii=False,
        separators=(_ITEM_SEP, _KEY_SEP),
        sort_keys=True,
        allow_nan=False,
        check_circular=False,
        default=default,
    )
    try:
        text = encoder.encode(value)
        data = text.encode("utf-8")
    except (_NeedsSlowPath, TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return None
    if _has_non_bmp(text) or _NON_STR_KEY.search(data) or _has_float(data):
        return None
    data = data.translate(_RESTORE_SEPARATORS)
    return _fill_decimals(data, decimals) if decimals else data


def _has_non_bmp(text: str) -> bool:
    return not text.isascii() and len(text.encode("utf-16-le")) != 2 * len(text)


def _has_float(data: bytes) -> bool:
    """Delete digits and signs: an int vanishes, a float leaves "." or "e" right after its separator."""
    skeleton = data.translate(_SKELETON, _NUMBER_CHARS)
    return bool(_FLOAT_AFTER_SEPARATOR.search(skeleton) or _FLOAT_FIRST_IN_ARRAY.search(data))


def _fill_decimals(data: bytes, decimals: list[bytes]) -> bytes | None:
    # Each placeholder is a whole JSON string token; a user string that looks like one adds a
    # match, so an exact count proves every match is ours.
    if len(_PLACEHOLDER.findall(data)) != len(decimals):
        return None
    return _PLACEHOLDER.sub(lambda m: decimals[int(m.group(1))], data)


def _canonical_slow(value: Any) -> str:
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, Decimal):
        out.append(_decimal_text(value))
    elif isinstance(value, dict):
        _write_object(value, out)
    elif isinstance(value, (list, tuple)):
        _write_array(value, out)
    elif isinstance(value, float):
        raise TypeError("float is not allowed in canonical JSON; use decimal.Decimal")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_object(obj: dict[Any, Any], out: list[str]) -> None:
    for key in obj:
        if not isinstance(key, str):
            raise TypeError(f"object keys must be str, not {type(key).__name__}")
    out.append("{")
    for i, key in enumerate(sorted(obj, key=_utf16_order)):
        if i:
            out.append(",")
        out.append(_string(key))
        out.append(":")
        _write(obj[key], out)
    out.append("}")


def _write_array(items: list[Any] | tuple[Any, ...], out: list[str]) -> None:
    out.append("[")
    for i, item in enumerate(items):
        if i:
            out.append(",")
        _write(item, out)
    out.append("]")


def _utf16_order(key: str) -> bytes:
    """RFC 8785 §3.2.3: sort by UTF-16 code units, which is the byte order of UTF-16BE."""
    try:
        return key.encode("utf-16-be")
    except UnicodeEncodeError:
        raise ValueError("lone surrogate in an object key") from None


def _string(text: str) -> str:
    """RFC 8785 §3.2.2.2: escape '"', '\\' and U+0000..U+001F, short forms where ES6 has them."""
    return json.encoder.encode_basestring(text)


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError("NaN and Infinity are not allowed in canonical JSON")
    return Decimal.__str__(value)
