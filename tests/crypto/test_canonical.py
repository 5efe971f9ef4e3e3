"""canonical_json / parse_json: RFC 8785 structure, FHIR decimals kept lexically, strict parsing."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehr.crypto.canonical import InvalidJSON, _canonical_fast, _canonical_slow, canonical_json, parse_json

# --- strategies --------------------------------------------------------------------------------

_TRICKY_TEXT = [
    "", "1", "-1", "1.5", "1e+16", "true", "false", "null", "\U0001f600", "\ufb33", "\uffff", "\u20ac",
    "\x00", "\x000\x00", '"\x000\x00', "\x01", "\x1f", "\x7f", "\u2028", '"', "\\", '\\"', "[1.5", "[e",
    '{"1', ":1.5,", "\\u0000",
]  # fmt: skip
texts = st.one_of(st.text(st.characters(codec="utf-8"), max_size=12), st.sampled_from(_TRICKY_TEXT))
decimals = st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,12})?([eE][-+]?[0-9]{1,3})?", fullmatch=True).map(Decimal)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), decimals, texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5), max_leaves=40
)


def same(a: Any, b: Any) -> bool:
    """Equal, and numbers also in lexical form (so Decimal('1.50') is not Decimal('1.5'))."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or isinstance(a, str):
        return type(a) is type(b) and a == b
    return a == b and str(a) == str(b)


def reversed_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: reversed_dicts(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_dicts(v) for v in value]
    return value


def reference(value: Any) -> str:
    """A direct reading of RFC 8785 §3.2 (strings, UTF-16 key order) with our number rule."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, str):
        short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
        return '"' + "".join(short.get(c, f"\\u{ord(c):04x}" if c < " " else c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ",".join(reference(v) for v in value) + "]"
    units = sorted(
        value,
        key=lambda k: [
            int.from_bytes(k.encode("utf-16-be")[i : i + 2]) for i in range(0, len(k.encode("utf-16-be")), 2)
        ],
    )
    return "{" + ",".join(reference(k) + ":" + reference(value[k]) for k in units) + "}"


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "example",
    "meta": {"versionId": "2", "lastUpdated": "2024-05-01T10:15:30.123+00:00"},
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Peter [edited] Chalmers</div>'},
    "identifier": [{"use": "usual", "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
    "active": True,
    "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
    "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work", "rank": 1}],
    "gender": "male",
    "birthDate": "1974-12-25",
    "deceasedBoolean": False,
    "contact": [{"name": {"family": "du Marché", "given": ["Bénédicte"]}}],
}


# --- properties --------------------------------------------------------------------------------


@given(json_values)
def test_canonical_form_is_idempotent(value: Any) -> None:
    once = canonical_json(value)
    assert canonical_json(parse_json(once)) == once


@given(json_values)
def test_parse_of_canonical_gives_the_value_back_with_decimal_lexical_form(value: Any) -> None:
    assert same(parse_json(canonical_json(value)), value)


@given(json_values)
def test_output_does_not_depend_on_dict_insertion_order(value: Any) -> None:
    assert canonical_json(reversed_dicts(value)) == canonical_json(value)


@given(json_values)
def test_output_matches_a_direct_reading_of_rfc_8785(value: Any) -> None:
    assert canonical_json(value) == reference(value).encode("utf-8")


@given(json_values)
def test_fast_path_equals_careful_path_whenever_it_answers(value: Any) -> None:
    fast = _canonical_fast(value) if isinstance(value, dict | list) else None
    assert fast is None or fast == _canonical_slow(value).encode("utf-8")


@given(json_values, st.sampled_from([1.5, -0.0, 1e16, 2.5e-7, float("inf"), float("nan")]))
def test_a_float_anywhere_is_refused(value: Any, number: float) -> None:
    for wrapped in ([value, number], {"k": [number], "v": value}, [[number]], {"a": number}):
        with pytest.raises(TypeError):
            canonical_json(wrapped)


@given(json_values, st.sampled_from([1, -5, 1.5, True, False, None, (1, 2)]))
def test_a_non_str_key_is_refused(value: Any, key: Any) -> None:
    for wrapped in ({key: value}, [{key: 1, 7: 2}], {"a": {key: value}}):
        with pytest.raises(TypeError):
            canonical_json(wrapped)


# --- examples ----------------------------------------------------------------------------------


def test_fast_path_serves_typical_resources_with_and_without_decimals() -> None:
    observation = {"resourceType": "Observation", "valueQuantity": {"value": Decimal("72.50"), "unit": "kg"}}
    for resource in (PATIENT, observation):
        assert _canonical_fast(resource) == _canonical_slow(resource).encode()


def test_rfc_8785_key_order_is_by_utf16_code_units() -> None:
    # RFC 8785 §3.2.3: the emoji (surrogates D83D DE00) sorts before U+FB33.
    value = {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5, "\u0080": 6, "\u00f6": 7}
    keys = list(json.loads(canonical_json(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_rfc_8785_string_escaping_example() -> None:
    source = rb"""{"string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}"""
    expected = r"""{"literals":[null,true,false],"string":"€$\u000f\nA'B\"\\\\\"/"}"""
    assert canonical_json(parse_json(source)) == expected.encode("utf-8")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("1.50", b"1.50"), ("1e2", b"1E+2"), ("-0.0", b"-0.0"), ("0.000001", b"0.000001"), ("10", b"10"),
     ("12345678901234567890123", b"12345678901234567890123"), ("-0", b"-0")],
)  # fmt: skip
def test_numbers_keep_their_fhir_precision(text: str, canonical: bytes) -> None:
    assert canonical_json([parse_json(text)]) == b"[" + canonical + b"]"


def test_fraction_and_exponent_parse_as_decimal_and_integers_as_int() -> None:
    assert parse_json(b"[1.50, 3, 1e2]") == [Decimal("1.50"), 3, Decimal("100")]
    assert [type(x) for x in parse_json(b"[1.50, 3, 1e2]")] == [Decimal, int, Decimal]


def test_non_finite_decimal_is_refused() -> None:
    for bad in (Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("sNaN")):
        with pytest.raises(ValueError):
            canonical_json({"a": bad})


def test_lone_surrogate_is_refused_by_canonical_json() -> None:
    for bad in (["\ud800"], {"\udc00": 1}, "\ud800"):
        with pytest.raises(ValueError):
            canonical_json(bad)


def test_unsupported_types_are_refused() -> None:
    for bad in ({"a": object()}, {"a": {1, 2}}, b"bytes", [bytearray(b"x")]):
        with pytest.raises(TypeError):
            canonical_json(bad)


@pytest.mark.parametrize(
    "bad",
    [
        b'{"a": 1, "a": 2}',
        b"\xef\xbb\xbf{}",
        "\ufeff{}",
        b"NaN",
        b"[Infinity]",
        b"[-Infinity]",
        b'"\xff"',
        b'["\\ud800"]',
        '["\ud800"]',
        b"[" * 65 + b"]" * 65,
        b"[" * 100_000,
        b"{'a': 1}",
        b"[1,]",
        b'{"a": "\x01"}',
        b"1" * 5000,
        "{}".encode("utf-16"),
    ],
)
def test_strict_parser_refuses(bad: bytes | str) -> None:
    with pytest.raises(InvalidJSON):
        parse_json(bad)


def test_nesting_up_to_64_is_accepted() -> None:
    assert parse_json(b"[" * 64 + b"]" * 64) is not None
    assert parse_json(b'{"a":' * 64 + b"1" + b"}" * 64) is not None
    with pytest.raises(InvalidJSON):
        parse_json(b'{"a":' * 65 + b"1" + b"}" * 65)


def test_escaped_surrogate_pair_is_accepted() -> None:
    assert parse_json(b'"\\ud83d\\ude00"') == "\U0001f600"


@pytest.mark.parametrize(
    "bad",
    [b'{"ssn": "SECRET-999", "ssn": "SECRET-999"}', b'{"note": "SECRET-999\\q"}', b'{"SECRET-999": }',
     b'"SECRET-999\xff"', b'["SECRET-999", NaN]', b'["SECRET-999"] SECRET-999'],
)  # fmt: skip
def test_parse_errors_never_carry_the_input(bad: bytes) -> None:
    with pytest.raises(InvalidJSON) as caught:
        parse_json(bad)
    err = caught.value
    assert "SECRET" not in str(err) and "SECRET" not in repr(err)
    assert err.__cause__ is None and err.__context__ is None
