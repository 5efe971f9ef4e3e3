"""The search parser against hand-checked expectations, one behaviour per test (search.html, R4)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ehr.errors import Category, EhrError, operation_outcome
from ehr.fhir.search.model import (
    Criterion,
    DateQuery,
    HasCriterion,
    Include,
    NumberQuery,
    Prefix,
    QuantityQuery,
    ReferenceQuery,
    Search,
    SortKey,
    TokenQuery,
)
from ehr.fhir.search.query import parse
from ehr.fhir.search.values import Component, ParamDef, ParamType

BASE = "https://ehr.test/fhir"


def _p(code: str, type_: ParamType, targets: tuple[str, ...] = (), components: tuple[Component, ...] = ()) -> ParamDef:
    return ParamDef(code, type_, f"http://hl7.org/fhir/SearchParameter/{code}", f"X.{code}", targets, components)


def _table(*params: ParamDef) -> dict[str, ParamDef]:
    return {param.code: param for param in params}


PRACTITIONERS = ("Organization", "Practitioner", "PractitionerRole")
TABLE: dict[str, dict[str, ParamDef]] = {
    "Resource": _table(
        _p("_id", "token"),
        _p("_lastUpdated", "date"),
        _p("_tag", "token"),
        _p("_profile", "uri"),
        _p("_security", "token"),
        _p("_source", "uri"),
    ),
    "Patient": _table(
        _p("family", "string"),
        _p("given", "string"),
        _p("name", "string"),
        _p("identifier", "token"),
        _p("gender", "token"),
        _p("telecom", "token"),
        _p("birthdate", "date"),
        _p("general-practitioner", "reference", PRACTITIONERS),
        _p("organization", "reference", ("Organization",)),
    ),
    "Organization": _table(_p("name", "string"), _p("partof", "reference", ("Organization",))),
    "Practitioner": _table(_p("name", "string")),
    "Location": _table(_p("name", "string"), _p("near", "special")),
    "Observation": _table(
        _p("subject", "reference", ("Patient", "Group", "Device", "Location")),
        _p("patient", "reference", ("Patient",)),
        _p("focus", "reference"),
        _p("code", "token"),
        _p("date", "date"),
        _p("value-quantity", "quantity"),
        _p(
            "code-value-quantity",
            "composite",
            components=(Component("code", "token", "code"), Component("value-quantity", "quantity", "value")),
        ),
    ),
    "RiskAssessment": _table(_p("probability", "number")),
    "ValueSet": _table(_p("url", "uri")),
    "AuditEvent": _table(_p("entity", "reference"), _p("agent", "reference", ("Practitioner", "Patient"))),
    "Provenance": _table(_p("target", "reference")),
}
TYPES = frozenset(TABLE) - {"Resource"} | {"Group", "Device", "PractitionerRole"}


def lookup(resource_type: str) -> Mapping[str, ParamDef]:
    return TABLE.get(resource_type, {})


def search(resource_type: str | None, *pairs: tuple[str, str], strict: bool = True, max_count: int = 1000) -> Search:
    return parse(resource_type, pairs, lookup, base=BASE, strict=strict, max_count=max_count, resource_types=TYPES)


def one(resource_type: str | None, key: str, value: str) -> Criterion:
    (criterion,) = search(resource_type, (key, value)).criteria
    assert isinstance(criterion, Criterion)
    return criterion


def rejected(resource_type: str | None, *pairs: tuple[str, str], strict: bool = True) -> str:
    """The diagnostics the client receives for a search that must fail as invalid."""
    with pytest.raises(EhrError) as caught:
        search(resource_type, *pairs, strict=strict)
    assert caught.value.category is Category.INVALID
    diagnostics = operation_outcome(caught.value)["issue"]
    assert isinstance(diagnostics, list)
    return str(diagnostics[0]["diagnostics"])


def us(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()) * 1_000_000


def param(resource_type: str, code: str) -> ParamDef:
    return TABLE[resource_type][code]


# Combining values (search.html#combining) and escaping (search.html#escaping)


def test_repeated_parameter_ands() -> None:
    criteria = search("Patient", ("given", "a"), ("given", "b")).criteria
    assert criteria == (
        Criterion(param("Patient", "given"), values=("a",)),
        Criterion(param("Patient", "given"), values=("b",)),
    )


def test_commas_or() -> None:
    assert one("Patient", "given", "a,b,c").values == ("a", "b", "c")


def test_escaped_separators_are_literal() -> None:
    assert one("Patient", "name", r"a\,b,c\$d\|e\\,f").values == ("a,b", "c$d|e\\", "f")


def test_unknown_escape_keeps_the_backslash() -> None:
    assert one("Patient", "name", r"a\b").values == ("a\\b",)


def test_escaped_pipe_in_token_code() -> None:
    assert one("Patient", "identifier", r"http://x|a\|b").values == (TokenQuery("http://x", "a|b"),)


def test_empty_value_is_ignored() -> None:
    assert search("Patient", ("name", ""), ("no-such-param", ""), strict=True) == Search("Patient")


def test_empty_alternatives_are_dropped() -> None:
    assert one("Patient", "name", "a,,b,").values == ("a", "b")


# Strings


def test_string_value_is_kept_as_written() -> None:
    assert one("Patient", "family", "Ölsen Smith").values == ("Ölsen Smith",)


@pytest.mark.parametrize("modifier", ["exact", "contains"])
def test_string_exact_and_contains(modifier: str) -> None:
    assert one("Patient", f"name:{modifier}", "Eve") == Criterion(param("Patient", "name"), modifier, ("Eve",))


@pytest.mark.parametrize(("value", "missing"), [("true", True), ("false", False)])
def test_missing_true_and_false(value: str, missing: bool) -> None:
    assert one("Patient", "birthdate:missing", value) == Criterion(
        param("Patient", "birthdate"), "missing", missing=missing
    )


def test_missing_needs_true_or_false() -> None:
    assert "'gender:missing'" in rejected("Patient", ("gender:missing", "yes"))


# Tokens (search.html#token)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("male", TokenQuery(None, "male")),
        (
            "http://hl7.org/fhir/administrative-gender|male",
            TokenQuery("http://hl7.org/fhir/administrative-gender", "male"),
        ),
        ("|male", TokenQuery("", "male")),
        ("http://hl7.org/fhir/administrative-gender|", TokenQuery("http://hl7.org/fhir/administrative-gender", None)),
    ],
)
def test_token_forms(value: str, expected: TokenQuery) -> None:
    assert one("Patient", "gender", value).values == (expected,)


def test_token_pipe_alone_is_rejected() -> None:
    assert "'gender'" in rejected("Patient", ("gender", "|"))


def test_token_not() -> None:
    assert one("Patient", "gender:not", "male") == Criterion(
        param("Patient", "gender"), "not", (TokenQuery(None, "male"),)
    )


def test_token_text_is_a_string() -> None:
    assert one("Observation", "code:text", "blood|pressure").values == ("blood|pressure",)


@pytest.mark.parametrize("modifier", ["above", "below", "in", "not-in", "of-type"])
def test_token_unsupported_modifiers(modifier: str) -> None:
    assert "not supported" in rejected("Observation", (f"code:{modifier}", "x"))


def test_unknown_modifier_is_rejected_even_lenient() -> None:
    message = rejected("Patient", ("name:fuzzy", "x"), strict=False)
    assert "'name:fuzzy'" in message and "unknown modifier" in message


def test_modifier_of_another_type_is_not_supported() -> None:
    assert "not supported on date" in rejected("Patient", ("birthdate:exact", "2020"))


def test_id_param_is_a_token() -> None:
    assert one("Patient", "_id", "a1,b2").values == (TokenQuery(None, "a1"), TokenQuery(None, "b2"))


# Dates (search.html#date, #prefix)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2020", us(2020, 1, 1), us(2021, 1, 1)),
        ("2020-02", us(2020, 2, 1), us(2020, 3, 1)),
        ("2020-03-15", us(2020, 3, 15), us(2020, 3, 16)),
        ("2020-03-15T10:30", us(2020, 3, 15, 10, 30), us(2020, 3, 15, 10, 31)),
        ("2020-03-15T10:30:45", us(2020, 3, 15, 10, 30, 45), us(2020, 3, 15, 10, 30, 46)),
        ("2020-03-15T10:30:45.123", us(2020, 3, 15, 10, 30, 45) + 123_000, us(2020, 3, 15, 10, 30, 45) + 124_000),
        ("2020-03-15T10:30:45Z", us(2020, 3, 15, 10, 30, 45), us(2020, 3, 15, 10, 30, 46)),
        ("2020-03-15T10:30+02:00", us(2020, 3, 15, 8, 30), us(2020, 3, 15, 8, 31)),
        ("2020-03-15T10:30-05:30", us(2020, 3, 15, 16, 0), us(2020, 3, 15, 16, 1)),
        ("2020-03-15T10:30 02:00", us(2020, 3, 15, 8, 30), us(2020, 3, 15, 8, 31)),  # an unencoded "+"
    ],
)
def test_date_precision_is_its_range(value: str, low: int, high: int) -> None:
    assert one("Patient", "birthdate", value).values == (DateQuery("eq", low, high),)


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"])
def test_date_prefixes(prefix: Prefix) -> None:
    assert one("Patient", "birthdate", f"{prefix}2020").values == (DateQuery(prefix, us(2020, 1, 1), us(2021, 1, 1)),)


@pytest.mark.parametrize(
    "value",
    [
        "2020-13",
        "2020-02-30",
        "20200101",
        "2020-01-01T25:00",
        "2020-01-01T10",
        "yesterday",
        "ge",
        "0000",
        "2020-01-01T10:00+15:00",
        "2020-01-01T10:00:00.1234567890",
        "xx2020",
    ],
)
def test_invalid_dates_are_rejected(value: str) -> None:
    message = rejected("Patient", ("birthdate", value))
    assert "'birthdate'" in message and value not in message


def test_leap_day_is_a_date() -> None:
    assert one("Patient", "birthdate", "2024-02-29").values == (DateQuery("eq", us(2024, 2, 29), us(2024, 3, 1)),)


# Numbers and quantities (search.html#number, #quantity)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("100", "99.5", "100.5"),
        ("100.0", "99.95", "100.05"),
        ("1e2", "50", "150"),  # one significant figure
        ("1.00e2", "99.5", "100.5"),
        ("0.001", "0.0005", "0.0015"),
        ("-5", "-5.5", "-4.5"),
    ],
)
def test_number_range_follows_precision(value: str, low: str, high: str) -> None:
    (number,) = one("RiskAssessment", "probability", value).values
    assert number == NumberQuery("eq", Decimal(value), Decimal(low), Decimal(high))


def test_number_prefix() -> None:
    (number,) = one("RiskAssessment", "probability", "gt0.8").values
    assert isinstance(number, NumberQuery) and (number.prefix, number.value) == ("gt", Decimal("0.8"))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "abc", "1e", "0x10", "1.", ".5", "ne", "1e99999"])
def test_invalid_numbers_are_rejected(value: str) -> None:
    assert "'probability'" in rejected("RiskAssessment", ("probability", value))


def test_quantity_with_system_and_code() -> None:
    (quantity,) = one("Observation", "value-quantity", "le5.4|http://unitsofmeasure.org|mg").values
    number = NumberQuery("le", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"))
    assert quantity == QuantityQuery(number, "http://unitsofmeasure.org", "mg")


def test_quantity_with_code_only_matches_any_system() -> None:
    (quantity,) = one("Observation", "value-quantity", "5.4||mg").values
    assert isinstance(quantity, QuantityQuery) and (quantity.system, quantity.code) == (None, "mg")


def test_quantity_number_only_matches_any_unit() -> None:
    (quantity,) = one("Observation", "value-quantity", "5.4").values
    assert isinstance(quantity, QuantityQuery) and (quantity.system, quantity.code) == (None, None)


def test_quantity_needs_three_parts() -> None:
    assert "'value-quantity'" in rejected("Observation", ("value-quantity", "5.4|mg"))


# References (search.html#reference)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("123", ReferenceQuery(None, "123")),
        ("Patient/123", ReferenceQuery("Patient", "123")),
        ("Patient/123/_history/4", ReferenceQuery("Patient", "123")),
        (f"{BASE}/Patient/123", ReferenceQuery("Patient", "123")),
        (f"{BASE}/Patient/123/_history/4", ReferenceQuery("Patient", "123")),
        (
            "http://elsewhere.example/fhir/Patient/1",
            ReferenceQuery(None, None, "http://elsewhere.example/fhir/Patient/1"),
        ),
        (
            "urn:uuid:0d9b2d4c-1a6e-4e8b-9d7a-2f6f0c8e9b11",
            ReferenceQuery(None, None, "urn:uuid:0d9b2d4c-1a6e-4e8b-9d7a-2f6f0c8e9b11"),
        ),
    ],
)
def test_reference_forms(value: str, expected: ReferenceQuery) -> None:
    assert one("Observation", "subject", value).values == (expected,)


def test_reference_type_modifier_sets_type() -> None:
    criterion = one("Observation", "subject:Patient", "123,Patient/456")
    assert criterion.modifier == "Patient"
    assert criterion.values == (ReferenceQuery("Patient", "123"), ReferenceQuery("Patient", "456"))


def test_reference_type_modifier_disagreeing_with_value_is_rejected() -> None:
    assert "'subject:Patient'" in rejected("Observation", ("subject:Patient", "Group/1"))


def test_reference_type_must_be_a_target() -> None:
    assert "does not refer to Organization" in rejected("Observation", ("subject", "Organization/1"))


def test_reference_type_modifier_must_be_a_target() -> None:
    assert "does not refer to Organization" in rejected("Observation", ("subject:Organization", "1"))


def test_reference_type_must_be_known() -> None:
    message = rejected("Observation", ("focus", "Spaceship/1"))
    assert "'focus'" in message and "Spaceship" not in message


def test_reference_identifier_modifier_is_a_token() -> None:
    criterion = one("Observation", "subject:identifier", "http://hospital.example/mrn|12345")
    assert criterion.values == (TokenQuery("http://hospital.example/mrn", "12345"),)


@pytest.mark.parametrize("value", ["Patient/", "Patient/1/2", "bad id", "Patient/1/_history"])
def test_malformed_reference_is_rejected(value: str) -> None:
    assert "'subject'" in rejected("Observation", ("subject", value))


# URIs (search.html#uri)


@pytest.mark.parametrize("modifier", ["above", "below"])
def test_uri_above_and_below(modifier: str) -> None:
    criterion = one("ValueSet", f"url:{modifier}", "http://acme.org/fhir/ValueSet")
    assert (criterion.modifier, criterion.values) == (modifier, ("http://acme.org/fhir/ValueSet",))


def test_uri_canonical_version_is_kept_whole() -> None:
    assert one("ValueSet", "url", "http://acme.org/fhir/ValueSet/x|1.0").values == (
        "http://acme.org/fhir/ValueSet/x|1.0",
    )


# Chains (search.html#chaining)


def test_chain_with_type_modifier() -> None:
    assert one("Observation", "subject:Patient.name", "peter") == Criterion(
        param("Observation", "subject"),
        chain=Criterion(param("Patient", "name"), values=("peter",)),
        chain_type="Patient",
    )


def test_chain_goes_through_the_one_target_with_the_parameter() -> None:
    criterion = one("Observation", "subject.birthdate", "2020")
    assert criterion == one("Observation", "subject:Patient.birthdate", "2020")
    assert criterion.chain_type == "Patient"


def test_chain_through_a_single_target() -> None:
    assert one("Patient", "organization.name", "Acme").chain_type == "Organization"


def test_ambiguous_chain_asks_for_a_type_modifier() -> None:
    message = rejected("Observation", ("subject.name", "peter"))
    assert "'subject.name'" in message and "type modifier" in message


def test_chain_on_a_reference_to_any_type_needs_a_modifier() -> None:
    assert "'focus.name'" in rejected("Observation", ("focus.name", "x"))


def test_multi_level_chain() -> None:
    criterion = one("Observation", "subject:Patient.organization.name", "Acme")
    assert criterion.chain is not None and criterion.chain.chain is not None
    assert (criterion.chain_type, criterion.chain.chain_type) == ("Patient", "Organization")
    assert criterion.chain.chain == Criterion(param("Organization", "name"), values=("Acme",))


def test_chain_ends_in_a_modifier() -> None:
    criterion = one("Observation", "subject:Patient.name:exact", "Eve")
    assert criterion.chain == Criterion(param("Patient", "name"), "exact", ("Eve",))


def test_chain_depth_is_limited() -> None:
    assert one("Patient", "organization.partof.partof.name", "x").chain is not None
    assert "at most 3 deep" in rejected("Patient", ("organization.partof.partof.partof.name", "x"))


def test_chain_on_a_non_reference_is_rejected() -> None:
    assert "'name.family'" in rejected("Patient", ("name.family", "x"))


def test_chain_qualified_by_a_non_type_is_rejected() -> None:
    assert "'subject:missing.name'" in rejected("Observation", ("subject:missing.name", "x"))


def test_chain_to_an_unknown_parameter_is_unknown() -> None:
    assert "'subject:Patient.shoe-size': unknown parameter" in rejected(
        "Observation", ("subject:Patient.shoe-size", "9")
    )
    assert search("Observation", ("subject:Patient.shoe-size", "9"), strict=False).ignored == (
        "subject:Patient.shoe-size",
    )


# Reverse chaining (search.html#has)


def test_has() -> None:
    (criterion,) = search("Patient", ("_has:Observation:patient:code", "1234-5")).criteria
    assert criterion == HasCriterion(
        "Observation",
        param("Observation", "patient"),
        Criterion(param("Observation", "code"), values=(TokenQuery(None, "1234-5"),)),
    )


def test_nested_has() -> None:
    (criterion,) = search(
        "Patient", ("_has:Observation:patient:_has:AuditEvent:entity:agent", "Practitioner/7")
    ).criteria
    assert isinstance(criterion, HasCriterion) and isinstance(criterion.criterion, HasCriterion)
    inner = criterion.criterion
    assert (inner.source_type, inner.reference) == ("AuditEvent", param("AuditEvent", "entity"))
    assert inner.criterion == Criterion(param("AuditEvent", "agent"), values=(ReferenceQuery("Practitioner", "7"),))


def test_has_unknown_type_is_rejected() -> None:
    assert "resource type" in rejected("Patient", ("_has:Nothing:patient:code", "1"))


def test_has_needs_a_reference_parameter() -> None:
    assert "is not a reference parameter" in rejected("Patient", ("_has:Observation:code:code", "1"))


def test_has_reference_must_point_at_the_searched_type() -> None:
    assert "Observation.patient does not refer to Organization" in rejected(
        "Organization", ("_has:Observation:patient:code", "1")
    )


def test_has_needs_four_parts() -> None:
    assert "_has:Type:reference:parameter" in rejected("Patient", ("_has:Observation:patient", "1"))


def test_has_unknown_parameter_is_unknown() -> None:
    assert search("Patient", ("_has:Observation:patient:colour", "1"), strict=False).ignored == (
        "_has:Observation:patient:colour",
    )


# Composites (search.html#composite)


def test_composite_has_one_part_per_component() -> None:
    (value,) = one("Observation", "code-value-quantity", "http://loinc.org|8480-6$lt60").values
    number = NumberQuery("lt", Decimal(60), Decimal("59.5"), Decimal("60.5"))
    assert value == (TokenQuery("http://loinc.org", "8480-6"), QuantityQuery(number, None, None))


def test_composite_with_escaped_dollar_in_a_part() -> None:
    (value,) = one("Observation", "code-value-quantity", r"a\$b$60||mg").values
    assert isinstance(value, tuple) and value[0] == TokenQuery(None, "a$b")


@pytest.mark.parametrize("value", ["http://loinc.org|8480-6", "a$1$2", "$60"])
def test_composite_part_count_must_match(value: str) -> None:
    assert "'code-value-quantity'" in rejected("Observation", ("code-value-quantity", value))


# Result parameters (search.html#return)


def test_count() -> None:
    assert search("Patient", ("_count", "20")).count == 20


def test_count_is_clamped_to_the_maximum() -> None:
    assert search("Patient", ("_count", "5000"), max_count=100).count == 100


def test_count_zero_means_count_only() -> None:
    assert search("Patient", ("_count", "0")).count == 0


@pytest.mark.parametrize("value", ["-1", "ten", "1.5", "²"])
def test_count_must_be_a_non_negative_integer(value: str) -> None:
    assert "'_count'" in rejected("Patient", ("_count", value))


def test_sort() -> None:
    sort = search("Patient", ("_sort", "family,-birthdate")).sort
    assert sort == (SortKey(param("Patient", "family"), False), SortKey(param("Patient", "birthdate"), True))


def test_sort_by_resource_parameters() -> None:
    sort = search(None, ("_sort", "-_lastUpdated,_id")).sort
    assert [(key.param.code, key.descending) for key in sort] == [("_lastUpdated", True), ("_id", False)]


def test_sort_by_unknown_parameter_is_rejected() -> None:
    assert "unknown parameter 'shoe-size'" in rejected("Patient", ("_sort", "shoe-size"))


@pytest.mark.parametrize(
    ("resource_type", "code"), [("Observation", "subject"), ("Observation", "code-value-quantity")]
)
def test_sort_by_reference_or_composite_is_rejected(resource_type: str, code: str) -> None:
    assert "cannot sort" in rejected(resource_type, ("_sort", code))


def test_include() -> None:
    include = search("Observation", ("_include", "Observation:subject:Patient")).include
    assert include == (Include("Observation", param("Observation", "subject"), "Patient"),)


def test_include_iterate() -> None:
    include = search(
        "Observation", ("_include", "Observation:subject"), ("_include:iterate", "Patient:organization")
    ).include
    assert [(i.source_type, i.target_type, i.iterate) for i in include] == [
        ("Observation", None, False),
        ("Patient", None, True),
    ]


def test_revinclude() -> None:
    revinclude = search("Patient", ("_revinclude:iterate", "Provenance:target")).revinclude
    assert revinclude == (Include("Provenance", param("Provenance", "target"), None, iterate=True),)


@pytest.mark.parametrize("value", ["*", "Observation:*"])
def test_include_wildcard_is_not_supported(value: str) -> None:
    assert "not supported" in rejected("Observation", ("_include", value))


@pytest.mark.parametrize(
    "value", ["Observation", "Observation:code", "Observation:subject:Organization", "Nothing:subject", "a:b:c:d"]
)
def test_malformed_include_is_rejected(value: str) -> None:
    assert "'_include'" in rejected("Observation", ("_include", value))


def test_include_with_unknown_modifier_is_rejected() -> None:
    assert "'_include:deep'" in rejected("Observation", ("_include:deep", "Observation:subject"))


@pytest.mark.parametrize("value", ["true", "false", "count", "data", "text"])
def test_summary(value: str) -> None:
    assert search("Patient", ("_summary", value)).summary == value


def test_summary_must_be_a_known_value() -> None:
    assert "'_summary'" in rejected("Patient", ("_summary", "brief"))


def test_summary_with_elements_is_rejected() -> None:
    assert "_elements" in rejected("Patient", ("_summary", "true"), ("_elements", "name"))


def test_elements() -> None:
    assert search("Patient", ("_elements", "identifier, name,,name")).elements == ("identifier", "name")


@pytest.mark.parametrize("value", ["none", "estimate", "accurate"])
def test_total(value: str) -> None:
    assert search("Patient", ("_total", value)).total == value


def test_total_must_be_a_known_value() -> None:
    assert "'_total'" in rejected("Patient", ("_total", "exact"))


def test_format_and_pretty_are_left_to_the_http_layer() -> None:
    assert search("Patient", ("_format", "json"), ("_pretty", "true")) == Search("Patient")


def test_cursor() -> None:
    assert search("Patient", ("_cursor", "WzEsMl0")).cursor == "WzEsMl0"


@pytest.mark.parametrize("name", ["_contained", "_containedType"])
def test_contained_is_not_supported(name: str) -> None:
    assert "not supported" in rejected("Patient", (name, "true"), strict=False)


def test_single_result_parameter_may_not_repeat() -> None:
    assert "'_count'" in rejected("Patient", ("_count", "1"), ("_count", "2"))


def test_result_parameter_takes_no_modifier() -> None:
    assert "'_count:max'" in rejected("Patient", ("_count:max", "1"))


# Unknown parameters (search.html#errors)


def test_unknown_parameter_is_rejected_when_strict() -> None:
    message = rejected("Patient", ("shoe-size", "9"))
    assert "'shoe-size': unknown parameter" in message and "handling=lenient" in message


def test_unknown_parameter_is_ignored_and_listed_when_lenient() -> None:
    result = search("Patient", ("shoe-size", "9"), ("name", "Eve"), ("shoe-size", "10"), strict=False)
    assert result.ignored == ("shoe-size",)
    assert result.criteria == (Criterion(param("Patient", "name"), values=("Eve",)),)


def test_special_parameter_is_unsupported() -> None:
    assert "'near': not supported" in rejected("Location", ("near", "42|-71|10|km"))
    assert search("Location", ("near", "42|-71"), strict=False).ignored == ("near",)


def test_system_search_allows_only_resource_parameters() -> None:
    assert search(None, ("_id", "1"), ("_tag", "a|b")).resource_type is None
    assert "'name': unknown parameter" in rejected(None, ("name", "x"))


def test_long_parameter_name_is_cut_in_the_message() -> None:
    message = rejected("Patient", ("x" * 500, "1"))
    assert "x" * 64 + "..." in message and "x" * 65 not in message


def test_values_are_never_repeated_in_messages() -> None:
    assert "Sensitive" not in rejected("Patient", ("birthdate", "Sensitive Name"))


# Limits


def test_at_most_100_criteria() -> None:
    assert len(search("Patient", *[("given", "a")] * 100).criteria) == 100
    assert "at most 100 search criteria" in rejected("Patient", *[("given", "a")] * 101)


def test_at_most_100_values() -> None:
    assert len(one("Patient", "given", ",".join(["a"] * 100)).values) == 100
    assert "at most 100 values" in rejected("Patient", ("given", ",".join(["a"] * 101)))


def test_value_length_is_limited() -> None:
    assert one("Patient", "given", "a" * 1024).values == ("a" * 1024,)
    assert "'given'" in rejected("Patient", ("given", "a" * 1025))
