"""``make bench`` end to end at a tiny scale: real server processes over mutual TLS, the record set loaded
through the API (by transaction Bundles, and by creates where the server has none), every search
answered right. A few seconds on SQLite, so CI notices when the bench and the server drift apart.
"""

from __future__ import annotations

import pytest

from tests.benchmarks import importer, run
from tests.benchmarks.load import Load
from tests.benchmarks.search_bench import SEARCHES

pytestmark = pytest.mark.slow

TINY = run.Plan(
    loads=[Load("create", 2, 10), Load("read", 2, 10)], warm_up=[],
    search_loads=[Load(op, 2, 20) for op in SEARCHES], search_scale=0.04,  # 40 patients, 400 observations
)


async def _bench() -> run.EngineRun:
    done = await run.run_engine("sqlite", TINY)
    assert done.error is None and done.failures == 0, (done.error, done.log_problems)
    assert done.search is not None and done.search.load is not None
    assert {m.operation for m in done.all_measurements} >= set(SEARCHES)
    assert all(spread["distinct"] > 0 for spread in done.search.queries.values())
    return done


async def test_the_search_bench_runs_against_the_real_server() -> None:
    done = await _bench()

    assert done.search is not None and done.search.load is not None
    imported = done.search.load
    if imported.unavailable is None:
        assert imported.method == "transaction" and imported.resources == 30 * 11  # the first Bundle, a probe, untimed
    assert len([m for m in done.all_measurements if m.server == "bare"]) == 4  # create, read, two searches


async def test_without_transactions_the_record_set_goes_in_by_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "TRANSACTIONS", "/fhir/no-such-endpoint")

    done = await _bench()

    assert done.search is not None and done.search.load is not None
    assert done.search.load.method == "create" and "answered 404" in (done.search.load.unavailable or "")
    assert done.search.load.resources == 40 * 11
