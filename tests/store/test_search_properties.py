"""FHIR search on both engines agrees with an in-memory R4 evaluator (tests/store/search_model.py)
over random Patients and Observations: strings, tokens, dates, quantities, references, chains,
_has, AND/OR, sorting, and keyset paging forward and back.

Every example loads its own small population, all of it tagged with a code of its own, and every
query carries ``_tag`` with that code, so examples sharing one store never see each other's data.
Query values are mostly drawn near the stored ones (a stored date moved by a second, a day...,
written at another precision and in another zone; a stored number moved by a little, written with
more or fewer decimals), where the boundaries of the R4 rules lie.

No ANALYZE between examples on PostgreSQL: the store keeps its own statistics up to date
(ehr/store/statistics.py) and chains and ``_has`` are compiled so that fresh, unanalysed tables
still plan well; a slow plan shows here as a timeout.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ehr.context import system_context
from ehr.db.database import Database
from ehr.fhir.search.query import parse
from ehr.fhir.validator import RESOURCE_TYPES
from ehr.store.search import supported_params
from ehr.store.service import Store
from tests.store.search_model import (
    BASE,
    ChainParam,
    DateParam,
    HasParam,
    Json,
    Param,
    Quantity,
    QuantityParam,
    Query,
    ReferenceParam,
    StringParam,
    Token,
    TokenParam,
    World,
    date_span,
    normalise,
    offset,
)

CTX = system_context("prop")
# No shrinking: each step would load a population again into the shared, growing store (minutes);
# a failure's message shows the query and the resources involved instead.
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
TYPES = frozenset(RESOURCE_TYPES) - {"AuditEvent"}
_examples = itertools.count()

TAG_SYSTEM = "urn:ehr-test:search-example"
LOINC, SNOMED, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"
OTHER_UNITS = "urn:example:units"
ID_SYSTEMS = ("urn:oid:1.2.36.1", "http://hospital.example/mrn")
ID_VALUES = ("A1", "B2", "C3")
GENDERS = ("male", "female", "other", "unknown")
CODES = ("8480-6", "8867-4", "2339-0")
# (human-readable unit, UCUM code): a stored quantity has either, both, or the code written as unit.
UNITS = (("mmHg", "mm[Hg]"), ("beats/min", "/min"), ("kg", "kg"))
# Letters whose normalised forms collide: accents, case, ß -> ss, the ﬁ ligature, a decomposed é.
LETTERS = ("a", "A", "á", "Ä", "o", "Ö", "ø", "Ø", "s", "S", "ß", "e", "é", "e\u0301", "È", "ﬁ")
ZONES = ("Z", "+02:00", "-05:00", "+14:00", "-10:30", "+05:45")
PREFIXES = ("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
NUMBERS = ("0", "1", "99.5", "100", "100.0", "100.05", "100.5", "120", "-2.5", "1e2", "1.0e2", "0.1")
# Steps away from a stored value, none and the smallest the most often: the boundaries lie there.
NUMBER_STEPS = ("0", "0", "0", "0.01", "-0.01", "0.05", "-0.05", "0.5", "-0.5", "1", "-1")
_SECOND, _MINUTE, _DAY = 1_000_000, 60_000_000, 86_400_000_000
DATE_STEPS = (0, 0, 0, -1, -1, -1, _SECOND, -_SECOND, _MINUTE, -_MINUTE, 60 * _MINUTE, _DAY, -_DAY, 31 * _DAY)
SORTS = {"Patient": ["birthdate", "-birthdate"], "Observation": ["date", "-date", "value-quantity", "-value-quantity"]}
BIRTHS = (datetime(1999, 12, 1), datetime(2001, 1, 31))
EFFECTIVE = (datetime(2020, 12, 1), datetime(2021, 1, 31))


# -- populations ----------------------------------------------------------------------------------

families = st.lists(st.sampled_from(LETTERS), min_size=1, max_size=5).map("".join)
identifiers = st.fixed_dictionaries(
    {}, optional={"system": st.sampled_from(ID_SYSTEMS), "value": st.sampled_from(ID_VALUES)}
).filter(bool)


def date_text(moment: datetime, precision: int, zone: str | None) -> str:
    """``moment`` written to ``precision`` (0 year .. 5 milliseconds), ``zone`` after a time."""
    formats = ("%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f")
    text = moment.strftime(formats[precision])
    return text[:-3] + (zone or "") if precision == 5 else text + (zone or "") if precision >= 3 else text


def moments(window: tuple[datetime, datetime]) -> st.SearchStrategy[datetime]:
    return st.datetimes(min_value=window[0], max_value=window[1])


@st.composite
def patients(draw: st.DrawFn) -> Json:
    body: Json = {"resourceType": "Patient"}
    names = draw(st.lists(st.one_of(st.just({}), families.map(lambda f: {"family": f})), max_size=2))
    if names:
        body["name"] = [{**n, "given": ["X"]} for n in names]
    if draw(st.booleans()):
        body["gender"] = draw(st.sampled_from(GENDERS))
    if draw(st.booleans()):
        body["birthDate"] = date_text(draw(moments(BIRTHS)), draw(st.integers(0, 2)), None)
    found = draw(st.lists(identifiers, max_size=2))
    if found:
        body["identifier"] = found
    return body


@st.composite
def quantities(draw: st.DrawFn) -> Json:
    """A value alone, with its human-readable unit, with its UCUM code (qty-3: a code has a system),
    with both, or with the code written as its unit too."""
    value = draw(st.one_of(st.sampled_from(NUMBERS).map(Decimal), st.integers(-5, 130), st.decimals(-5, 130, places=2)))
    unit, code = draw(st.sampled_from(UNITS))
    forms: list[Json] = [{}, {"unit": unit}, {"system": UCUM, "code": code}]
    forms.append({"unit": code, "system": UCUM, "code": code})
    forms.append({"unit": unit, "system": UCUM, "code": code})
    return {"value": value + 0 if isinstance(value, Decimal) else value, **draw(st.sampled_from(forms))}


@st.composite
def observations(draw: st.DrawFn) -> tuple[Json, str]:
    """The body, and how its subject is written: ``relative``, ``absolute``, ``group``, ``ghost`` (a
    patient that does not exist) or ``none``, then ``:n``, the patient number (resolved at loading)."""
    codings = [{"system": LOINC, "code": draw(st.sampled_from(CODES))}]
    if draw(st.booleans()):
        codings.append(draw(st.sampled_from([{"system": SNOMED, "code": c} for c in CODES] + [{"code": CODES[0]}])))
    body: Json = {"resourceType": "Observation", "status": "final", "code": {"coding": codings}}
    if draw(st.integers(0, 3)):
        body["valueQuantity"] = draw(quantities())
    if draw(st.integers(0, 3)):
        precision = draw(st.sampled_from([0, 1, 2, 4, 5]))
        body["effectiveDateTime"] = date_text(draw(moments(EFFECTIVE)), precision, draw(st.sampled_from(ZONES)))
    form = draw(st.sampled_from(["relative", "relative", "absolute", "group", "ghost", "none"]))
    return body, f"{form}:{draw(st.integers(0, 11))}"


@st.composite
def populations(draw: st.DrawFn) -> dict[str, Any]:
    people = draw(st.lists(patients(), min_size=(size := draw(st.integers(0, 12))), max_size=size))
    numbers = st.integers(0, max(len(people) - 1, 0))
    return {
        "patients": people,
        "updates": draw(st.dictionaries(numbers, patients(), max_size=2 if people else 0)),
        "observations": draw(st.lists(observations(), min_size=(size := draw(st.integers(0, 15))), max_size=size)),
        "deleted": draw(st.sets(st.sampled_from(["p0", "p1", "p2", "o0", "o1"]), max_size=2)),
    }


async def load(store: Store, db: Database, tag: str, population: dict[str, Any]) -> World:
    """Writes the population (ids ``<tag>-p00``, ``<tag>-o00``...), then its updates and deletes;
    returns what stays live."""
    meta = {"tag": [{"system": TAG_SYSTEM, "code": tag}]}
    patient_ids = [f"{tag}-p{n:02d}" for n in range(len(population["patients"]))]
    bodies = zip(patient_ids, population["patients"], strict=True)
    live: dict[str, Json] = {res_id: {**body, "id": res_id, "meta": meta} for res_id, body in bodies}
    for n, (body, subject) in enumerate(population["observations"]):
        res_id = f"{tag}-o{n:02d}"
        live[res_id] = {**body, "id": res_id, "meta": meta, **_subject(tag, subject, patient_ids)}
    for res_id, body in live.items():
        await store.update(CTX, body["resourceType"], res_id, body)
    for n, body in population["updates"].items():
        live[patient_ids[n]] = {**body, "id": patient_ids[n], "meta": meta}
        await store.update(CTX, "Patient", patient_ids[n], live[patient_ids[n]])
    for short in population["deleted"]:
        res_id = f"{tag}-{short[0]}{int(short[1:]):02d}"
        if res_id in live:
            await store.delete(CTX, live.pop(res_id)["resourceType"], res_id)
    return World(live.values())


def _subject(tag: str, subject: str, patient_ids: list[str]) -> Json:
    form, _, number = subject.partition(":")
    target = patient_ids[int(number) % len(patient_ids)] if patient_ids else f"{tag}-ghost"
    references = {
        "relative": f"Patient/{target}",
        "absolute": f"{BASE}/Patient/{target}",
        "group": f"Group/{tag}-g{number}",
        "ghost": f"Patient/{tag}-ghost",
    }
    return {"subject": {"reference": references[form]}} if form in references else {}


# -- search values, mostly near the stored ones -----------------------------------------------------


@st.composite
def family_texts(draw: st.DrawFn, stored: list[str], exact: bool) -> str:
    """A stored family (cut to a prefix unless exact, mostly), each letter kept, upper- or
    lower-cased or stripped of its accent; or any letters."""
    if not stored or draw(st.integers(0, 3)) == 0:
        return draw(families)
    text = draw(st.sampled_from(stored))
    if not exact or draw(st.booleans()):
        text = text[: draw(st.integers(1, len(text)))]
    changes: list[Callable[[str], str]] = [lambda c: c, str.upper, str.lower, lambda c: normalise(c) or c]
    return "".join(draw(st.sampled_from(changes))(c) for c in text)


@st.composite
def date_values(draw: st.DrawFn, stored: list[str], window: tuple[datetime, datetime]) -> tuple[str, str]:
    """(prefix, date): an edge of a stored value's range, moved by a step, or any moment of the
    window; written to any precision, in any zone (none: UTC)."""
    if len(stored) > 0 and draw(st.integers(0, 3)) > 0:
        edge = draw(st.sampled_from(date_span(draw(st.sampled_from(stored)))))
        instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=edge + draw(st.sampled_from(DATE_STEPS)))
    else:
        instant = draw(moments(window)).replace(tzinfo=UTC)
    precision = draw(st.integers(0, 5))
    zone = draw(st.none() | st.sampled_from(ZONES)) if precision >= 3 else None
    local = instant.astimezone(offset(zone)).replace(tzinfo=None)
    return draw(st.sampled_from(PREFIXES)), date_text(local, precision, zone)


@st.composite
def number_texts(draw: st.DrawFn, stored: Decimal | int | None) -> str:
    """A stored value moved by a small step and rounded to 0-2 decimals, or one of NUMBERS."""
    if stored is None or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(NUMBERS))
    moved = Decimal(str(stored)) + Decimal(draw(st.sampled_from(NUMBER_STEPS)))
    return str(moved.quantize(Decimal(1).scaleb(-draw(st.integers(0, 2)))))


@st.composite
def quantity_values(draw: st.DrawFn, stored: list[Json]) -> Quantity:
    """Mostly near a stored quantity, with its unit, its code, its system and code, or no unit."""
    prefix = draw(st.sampled_from(PREFIXES))
    if len(stored) > 0 and draw(st.integers(0, 3)) > 0:
        quantity = draw(st.sampled_from(stored))
        units = [(None, u) for u in (quantity.get("unit"), quantity.get("code")) if u]
        units += [(quantity["system"], quantity["code"])] if "system" in quantity else []
        system, unit = draw(st.sampled_from([(None, None), *units]))
        return Quantity(prefix, draw(number_texts(quantity["value"])), system, unit)
    number = draw(number_texts(None))
    form = draw(st.sampled_from(["none", "human", "coded"]))
    if form == "human":
        return Quantity(prefix, number, None, draw(st.sampled_from([u for pair in UNITS for u in pair])))
    if form == "coded":
        return Quantity(prefix, number, draw(st.sampled_from([UCUM, OTHER_UNITS])), draw(st.sampled_from(UNITS))[1])
    return Quantity(prefix, number)


identifier_tokens = st.one_of(
    st.builds(Token, st.none() | st.just("") | st.sampled_from(ID_SYSTEMS), st.sampled_from(ID_VALUES)),
    st.builds(Token, st.sampled_from(ID_SYSTEMS), st.none()),
)
gender_tokens = st.builds(Token, st.none() | st.just(""), st.sampled_from(GENDERS))
code_tokens = st.one_of(
    st.builds(Token, st.none() | st.just("") | st.sampled_from([LOINC, SNOMED]), st.sampled_from(CODES)),
    st.builds(Token, st.sampled_from([LOINC, SNOMED]), st.none()),
)


# -- parameters and queries -------------------------------------------------------------------------


def _some(values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    """One value, or two ORed."""
    return st.lists(values, min_size=1, max_size=2).map(tuple)


def token_params(code: str, tokens: st.SearchStrategy[Token], negate: bool = False) -> st.SearchStrategy[Param]:
    return st.builds(TokenParam, st.just(code), _some(tokens), st.just(False) | st.just(negate))


@st.composite
def reference_params(draw: st.DrawFn, world: World, tag: str) -> Param:
    if draw(st.integers(0, 4)) == 0:  # a Group: only `subject` may point at one
        return ReferenceParam("subject", (f"Group/{tag}-g{draw(st.integers(0, 11))}",))
    target = draw(st.sampled_from([*[r["id"] for r in world.of_type("Patient")], f"{tag}-p00", f"{tag}-ghost"]))
    code, typed = draw(st.sampled_from([("subject", None), ("patient", None), ("subject", "Patient")]))
    value = draw(st.sampled_from([target, f"Patient/{target}", f"{BASE}/Patient/{target}"]))
    return ReferenceParam(code, (value,), typed)


@st.composite
def patient_params(draw: st.DrawFn, world: World, tag: str, nested: bool = False) -> Param:
    kind = draw(st.sampled_from(["family", "identifier", "gender", "birthdate", *([] if nested else ["_has"])]))
    if kind == "_has":
        return HasParam("Observation", "patient", draw(observation_params(world, tag, nested=True)))
    if kind == "family":
        stored = [n["family"] for r in world.of_type("Patient") for n in r.get("name", ()) if "family" in n]
        exact = draw(st.integers(0, 3)) == 0
        return StringParam("family", draw(_some(family_texts(stored, exact))), exact)
    if kind == "birthdate":
        births = [r["birthDate"] for r in world.of_type("Patient") if "birthDate" in r]
        return DateParam("birthdate", draw(_some(date_values(births, BIRTHS))))
    param: Param = draw(token_params(kind, identifier_tokens if kind == "identifier" else gender_tokens, True))
    return param


@st.composite
def observation_params(draw: st.DrawFn, world: World, tag: str, nested: bool = False) -> Param:
    kinds = ["code", "value-quantity", "value-quantity", "date", *([] if nested else ["reference", "chain"])]
    kind = draw(st.sampled_from(kinds))
    if kind == "chain":
        code, typed = draw(st.sampled_from([("patient", False), ("subject", True)]))
        return ChainParam(code, "Patient", draw(patient_params(world, tag, nested=True)), typed)
    if kind == "value-quantity":
        stored = [r["valueQuantity"] for r in world.of_type("Observation") if "valueQuantity" in r]
        return QuantityParam("value-quantity", draw(_some(quantity_values(stored))))
    if kind == "date":
        effective = [r["effectiveDateTime"] for r in world.of_type("Observation") if "effectiveDateTime" in r]
        return DateParam("date", draw(_some(date_values(effective, EFFECTIVE))))
    param: Param = draw(reference_params(world, tag) if kind == "reference" else token_params(kind, code_tokens, True))
    return param


@st.composite
def queries(draw: st.DrawFn, world: World, tag: str, paged: bool) -> Query:
    """One to three parameters (ANDed), with the example's _tag; sorted and paged or not."""
    res_type = draw(st.sampled_from(["Patient", "Observation"]))
    params = patient_params if res_type == "Patient" else observation_params
    count = draw(st.sampled_from([1, 1, 1, 2, 3, 0]))
    chosen = draw(st.lists(params(world, tag), min_size=count, max_size=count))
    tagged = (TokenParam("_tag", (Token(TAG_SYSTEM, tag),)), *chosen)
    if not paged:
        return Query(res_type, tagged)
    return Query(res_type, tagged, draw(st.none() | st.sampled_from(SORTS[res_type])), draw(st.integers(1, 3)))


# -- running them -----------------------------------------------------------------------------------


async def pages(store: Store, query: Query) -> list[list[str]]:
    """The ids on each page, following the next cursors to the end; checks that the previous cursors
    lead back through the same pages, and that every page tells the same total."""
    found: list[list[str]] = []
    totals: set[int | None] = set()
    cursor: str | None = None
    while True:
        page, ids = await _page(store, query, cursor)
        found.append(ids)
        totals.add(page.total)
        cursor, previous = page.next_cursor, page.previous_cursor
        if cursor is None:
            break
        assert len(found) < 50, "paging does not end"
    back = len(found) - 1
    while previous is not None:
        page, ids = await _page(store, query, previous)
        back -= 1
        assert back >= 0 and ids == found[back], f"page {back} going back: {ids} != {found[back]}"
        previous = page.previous_cursor
    assert back == 0, "the previous cursors stop before the first page"
    assert totals == {sum(len(ids) for ids in found)}, totals
    return found


async def _page(store: Store, query: Query, cursor: str | None) -> tuple[Any, list[str]]:
    pairs = query.pairs() + ([("_cursor", cursor)] if cursor else [])
    search = parse(query.res_type, pairs, supported_params, base=BASE, strict=True, max_count=50, resource_types=TYPES)
    page, matches, _ = await store.search(CTX, search, query="")
    return page, [m.res_id for m in matches]


def explain(query: Query, world: World, expected: list[str], actual: list[str]) -> str:
    involved = {*expected, *actual}
    shown = {i: {k: v for k, v in r.items() if k != "meta"} for (_, i), r in world.resources.items() if i in involved}
    return (
        f"\nquery: {query.res_type}?{'&'.join(f'{k}={v}' for k, v in query.pairs())}"
        f"\nexpected: {expected}\nactual:   {actual}\nresources: {json.dumps(shown, default=str, ensure_ascii=False)}"
    )


@EXAMPLES
@given(population=populations(), data=st.data())
async def test_search_finds_what_the_r4_model_finds(
    store: Store, db: Database, population: dict[str, Any], data: st.DataObject
) -> None:
    tag = f"e{next(_examples)}"
    world = await load(store, db, tag, population)
    for query in data.draw(st.lists(queries(world, tag, paged=False), min_size=30, max_size=40), label="queries"):
        (ids,) = await pages(store, query)
        expected = query.expected(world)
        assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids)), explain(query, world, expected, ids)


@EXAMPLES
@given(population=populations(), data=st.data())
async def test_pages_follow_the_sort_order_of_the_r4_model(
    store: Store, db: Database, population: dict[str, Any], data: st.DataObject
) -> None:
    tag = f"s{next(_examples)}"
    world = await load(store, db, tag, population)
    for query in data.draw(st.lists(queries(world, tag, paged=True), min_size=2, max_size=4), label="queries"):
        found = await pages(store, query)
        assert all(len(page) == query.count for page in found[:-1]), found
        ids = [i for page in found for i in page]
        expected = query.expected(world)
        if query.sort is None:  # no order asked for: each match once
            assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids)), explain(query, world, expected, ids)
        else:
            assert ids == expected, explain(query, world, expected, ids)


async def test_human_units_match(store: Store, db: Database) -> None:
    """search.html#quantity: ``5.4||mg`` matches a quantity whose code *or* unit is mg."""
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
        "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
    }
    population = {"patients": [], "updates": {}, "deleted": (), "observations": [(observation, "")]}
    world = await load(store, db, "u", population)
    for unit in ("mm[Hg]", "mmHg"):
        query = Query("Observation", (TokenParam("_tag", (Token(TAG_SYSTEM, "u"),)),
                                      QuantityParam("value-quantity", (Quantity("", "120", None, unit),))))
        (ids,) = await pages(store, query)
        assert ids == query.expected(world) == ["u-o00"], explain(query, world, query.expected(world), ids)
