"""The CapabilityStatement lists exactly the parameters that work: every advertised parameter of
every type runs as a search (here ``:missing``, which every indexed type supports, and a sort where
the type sorts) on both engines, and nothing else is accepted."""

from __future__ import annotations

import pytest

from ehr.context import system_context
from ehr.errors import EhrError
from ehr.fhir.search.query import parse
from ehr.fhir.validator import RESOURCE_TYPES
from ehr.store.search import supported_params
from ehr.store.service import Store

TYPES = frozenset(RESOURCE_TYPES) - {"AuditEvent"}


def search_of(res_type: str, pairs: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    return parse(res_type, pairs, supported_params, base="https://ehr.test/fhir", strict=True,
                 max_count=50, resource_types=TYPES)


async def test_every_advertised_parameter_runs(store: Store) -> None:
    ctx = system_context("capability-test")
    ran = 0
    for res_type in sorted(TYPES):
        pairs = [(f"{code}:missing", "true") for code in supported_params(res_type) if code != "_id"]
        for start in range(0, len(pairs), 20):  # 20 ANDed criteria per query keeps the run short
            page, _, _ = await store.search(ctx, search_of(res_type, pairs[start : start + 20]), query="")
            assert page.total == 0
            ran += len(pairs[start : start + 20])
    assert ran > 1500


async def test_composites_are_not_advertised_and_are_refused() -> None:
    assert "code-value-quantity" not in supported_params("Observation")
    with pytest.raises(EhrError) as refused:
        search_of("Observation", [("code-value-quantity", "http://loinc.org|8480-6$gt100")])
    assert "code-value-quantity" in refused.value.message
