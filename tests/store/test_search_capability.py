"""The CapabilityStatement lists exactly the parameters that work: every advertised parameter of
every type runs as a search (here ``:missing``, which every indexed type supports, and a sort where
the type sorts) on both engines, and nothing else is accepted."""

from __future__ import annotations

import pytest

from ehr.context import system_context
from ehr.errors import EhrError
from ehr.fhir.search.definitions import params
from ehr.fhir.search.query import parse
from ehr.fhir.search.values import ParamDef
from ehr.fhir.validator import RESOURCE_TYPES
from ehr.store.search import supported_params
from ehr.store.service import Store

TYPES = frozenset(RESOURCE_TYPES) - {"AuditEvent"}


def search_of(res_type: str, pairs: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    return parse(res_type, pairs, supported_params, base="https://ehr.test/fhir", strict=True,
                 max_count=50, resource_types=TYPES)


SAMPLE = {"token": "x", "string": "x", "quantity": "1", "date": "2020"}


def probe(code: str, param: ParamDef) -> tuple[str, str]:
    """``:missing`` for plain parameters (every indexed type takes it); a value for composites."""
    if param.type == "composite":
        return code, "$".join(SAMPLE[c.type] for c in param.components)
    return f"{code}:missing", "true"


async def test_every_advertised_parameter_runs(store: Store) -> None:
    ctx = system_context("capability-test")
    ran = 0
    for res_type in sorted(TYPES):
        pairs = [probe(code, p) for code, p in supported_params(res_type).items() if code != "_id"]
        for start in range(0, len(pairs), 20):  # 20 ANDed criteria per query keeps the run short
            page, _, _ = await store.search(ctx, search_of(res_type, pairs[start : start + 20]), query="")
            assert page.total == 0
            ran += len(pairs[start : start + 20])
    assert ran > 1500


def test_phonetic_is_not_advertised_as_prefixes_of_names_are_not_sound_alike() -> None:
    assert "phonetic" not in supported_params("Patient") and "family" in supported_params("Patient")
    with pytest.raises(EhrError):
        search_of("Patient", [("phonetic", "smyth")])


async def test_unindexed_composites_are_not_advertised_and_are_refused() -> None:
    assert "code-value-quantity" in supported_params("Observation")
    unindexed = [(t, code) for t in sorted(TYPES) for code, p in params(t).items()
                 if p.type == "composite" and code not in supported_params(t)]
    assert len(unindexed) == 4  # the token/number/number composites
    res_type, code = unindexed[0]
    with pytest.raises(EhrError) as refused:
        search_of(res_type, [(code, "a$1$2")])
    assert code in refused.value.message
