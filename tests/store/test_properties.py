"""Property tests over the store on both engines: what goes in comes out; any history verifies."""

from __future__ import annotations

import itertools
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehr.api.services import Services
from ehr.context import system_context
from ehr.crypto.canonical import parse_json
from ehr.crypto.keys import MemoryKeyStore
from ehr.db.database import Database
from ehr.errors import Category, EhrError
from ehr.store.verify import verify_store

CTX = system_context("property-tests")
FIXTURE_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_ids = itertools.count()

text = st.text(alphabet=string.ascii_letters + " '-éøü", min_size=1, max_size=20).map(str.strip).filter(bool)
dates = st.dates(min_value=__import__("datetime").date(1900, 1, 1)).map(lambda d: d.isoformat())
decimals = st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False, allow_infinity=False)


@st.composite
def patients(draw: st.DrawFn) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient"}
    if draw(st.booleans()):
        resource["name"] = [
            {"family": draw(text), "given": draw(st.lists(text, min_size=1, max_size=3))}
            for _ in range(draw(st.integers(1, 2)))
        ]
    if draw(st.booleans()):
        resource["gender"] = draw(st.sampled_from(["male", "female", "other", "unknown"]))
    if draw(st.booleans()):
        resource["birthDate"] = draw(dates)
    if draw(st.booleans()):
        resource["active"] = draw(st.booleans())
    if draw(st.booleans()):
        resource["telecom"] = [{"system": "phone", "value": draw(st.from_regex(r"\+1 555 [0-9]{4}", fullmatch=True))}]
    if draw(st.booleans()):
        resource["identifier"] = [{"system": "urn:oid:1.2.3.4", "value": draw(text)}]
    if draw(st.booleans()):
        resource["extension"] = [{"url": "http://example.org/score", "valueDecimal": draw(decimals)}]
    if draw(st.booleans()):
        resource["multipleBirthInteger"] = draw(st.integers(1, 8))
    return resource


def _without_server_fields(resource: dict[str, Any]) -> dict[str, Any]:
    stripped = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    return stripped


@FIXTURE_SETTINGS
@given(resource=patients())
async def test_random_patients_round_trip_unchanged(
    services: Services, db: Database, keys: MemoryKeyStore, resource: dict[str, Any]
) -> None:
    store = services.store
    created = await store.create(CTX, "Patient", resource)
    read = await store.read(CTX, "Patient", created.res_id)
    assert read.body is not None
    stored = parse_json(read.body)
    assert _without_server_fields(stored) == resource
    if "extension" in resource:  # decimal precision survives, not just the value
        assert str(stored["extension"][0]["valueDecimal"]) == str(resource["extension"][0]["valueDecimal"])
    assert stored["meta"]["versionId"] == "1"


operations = st.lists(
    st.tuples(st.sampled_from(["update", "delete", "stale-update"]), st.integers(0, 2), patients()),
    min_size=1,
    max_size=12,
)


@FIXTURE_SETTINGS
@given(steps=operations)
async def test_random_histories_always_verify(
    services: Services, db: Database, keys: MemoryKeyStore, steps: list[tuple[str, int, dict[str, Any]]]
) -> None:
    store = services.store
    prefix = f"h{next(_ids)}"
    versions: dict[str, int] = {}
    for op, which, resource in steps:
        rid = f"{prefix}-{which}"
        if op == "delete":
            if await store.delete(CTX, "Patient", rid) is not None:
                versions[rid] += 1
            continue
        if_match = versions.get(rid, 0) + 5 if op == "stale-update" else None
        try:
            await store.update(CTX, "Patient", rid, {**resource, "id": rid}, if_match=if_match)
            versions[rid] = versions.get(rid, 0) + 1
        except EhrError as err:
            assert op == "stale-update" and err.category is Category.PRECONDITION_FAILED
    report = await verify_store(db, keys)
    assert report.ok, report.problems
    for rid, count in versions.items():
        history = await store.history(CTX, "Patient", rid, count=100)
        assert [v.version for v in history.versions] == list(range(count, 0, -1))
