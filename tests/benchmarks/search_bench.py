"""The search issue's benchmark, run after the create and read loads on the same two servers.

Loads the record set (dataset.py) into the real server through its API (importer.py: transaction
Bundles, timed as the import, or creates) and the same patients straight into the bare baseline's
JSON table (bare_search.py). On PostgreSQL both databases are then ANALYZEd, as autovacuum would
soon after an import (where it is on at all), so plans do not depend on when it last ran, and a
CHECKPOINT writes out the import's WAL, so the searches do not pay for its tail (a checkpoint spread
over the first minute of searches slowed each search's durable AuditEvent several times over in a
trial run). Then, in turns as before: a
warm-up that sends every distinct search once and checks each answer in full (a searchset Bundle,
the total, the matches on the page, the includes), and the loads, each a fixed number of requests
cycling through the searches, every answer checked for its total and counts. The bare baseline
answers the two single-parameter Patient searches; the others run on the real server alone.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tests.benchmarks import bare_search
from tests.benchmarks.dataset import Dataset, Query
from tests.benchmarks.importer import Import, load_full
from tests.benchmarks.load import Check, Exchange, Load, Target, http_request, run_load
from tests.benchmarks.report import Measurement
from tests.benchmarks.servers import asyncpg_dsn

# operation: the resource type it finds, whether the bare baseline answers it too
SEARCHES = {
    "search-family": ("Patient", True), "search-identifier": ("Patient", True),
    "search-observation": ("Observation", False), "search-include": ("Observation", False),
}
LOADS = tuple(Load(op, c, n) for op in SEARCHES for c, n in ((1, 300), (32, 2000)))
WARM_UP_CONCURRENCY = 8
DISTINCT = 1000  # different identifier and observation searches (family: every name in use)
PATIENTS = {"postgresql": 10_000, "sqlite": 1_000}  # at --search-scale 1; ten observations each
_TOTAL = re.compile(rb'"total":(\d+)')


class DatasetError(Exception):
    """The record set did not load completely, so no search would have a known right answer."""


@dataclass
class SearchRun:
    patients: int
    observations: int = 0
    queries: dict[str, dict[str, int]] = field(default_factory=dict)  # per operation: how many, their totals
    load: Import | None = None
    bare_seconds: float = 0.0
    settled: dict[str, str] = field(default_factory=dict)  # what was done between loading and searching
    measurements: list[Measurement] = field(default_factory=list)
    warm_up: list[Measurement] = field(default_factory=list)

    @property
    def failures(self) -> int:
        loading = self.load.failures if self.load else 0
        return sum(m.result.failures for m in self.measurements + self.warm_up) + loading

    def as_json(self) -> dict[str, Any]:
        return {"patients": self.patients, "observations": self.observations, "searches": self.queries,
                "import": self.load.as_json() if self.load else None, "before_searching": self.settled,
                "bare_load_seconds": round(self.bare_seconds, 1)}


async def run(
    into: SearchRun, engine: str, targets: dict[str, Target], databases: dict[str, str], loads: list[Load],
) -> None:
    """Fills ``into`` as it goes, so what was measured survives an error later on."""
    dataset = Dataset.generate(into.patients)
    into.observations = dataset.observations
    ids, into.load = await load_full(targets["full"], dataset)
    if (missing := ids.count(None)) or into.load.error:
        raise DatasetError(f"{missing} of {len(ids)} patients not loaded; {into.load.error or ''}".rstrip("; "))
    into.bare_seconds = await _timed_bare_load(databases["bare"], dataset)
    if engine == "postgresql":
        into.settled = await _settle(list(databases.values()))
    else:
        into.settled = {"analyze": "none: the server never runs it on SQLite, nor does the bare baseline"}
    queries = searches(dataset, [i for i in ids if i is not None])
    into.queries = {op: _spread(q) for op, q in queries.items()}
    for op, found in queries.items():
        for server in _servers(op):
            spec = Load(op, WARM_UP_CONCURRENCY, len(found))
            into.warm_up.append(await _measure(engine, server, targets[server], spec, found, strict=True))
    for spec in loads:
        for server in _servers(spec.operation):
            into.measurements.append(
                await _measure(engine, server, targets[server], spec, queries[spec.operation], strict=False)
            )


def searches(dataset: Dataset, ids: list[str]) -> dict[str, list[Query]]:
    """The distinct searches of each operation, in a fixed shuffled order."""
    found = {
        "search-family": dataset.family_queries(),
        "search-identifier": dataset.identifier_queries(DISTINCT),
        "search-observation": dataset.observation_queries(ids, DISTINCT, include=False),
        "search-include": dataset.observation_queries(ids, DISTINCT, include=True),
    }
    for n, queries in enumerate(found.values()):
        random.Random(n).shuffle(queries)
    return found


def _spread(queries: list[Query]) -> dict[str, int]:
    totals = sorted(q.total for q in queries)
    return {"distinct": len(queries), "least_matches": totals[0], "median_matches": totals[len(totals) // 2],
            "most_matches": totals[-1]} if totals else {"distinct": 0}


def _servers(operation: str) -> tuple[str, ...]:
    return ("full", "bare") if SEARCHES[operation][1] else ("full",)


async def _measure(
    engine: str, server: str, target: Target, spec: Load, queries: list[Query], *, strict: bool
) -> Measurement:
    res_type = SEARCHES[spec.operation][0]
    exchanges = [Exchange(http_request("GET", q.path), full_check(q, res_type) if strict else quick_check(q))
                 for q in queries]
    result = await run_load(target, exchanges, total=spec.requests, concurrency=spec.concurrency,
                            expected_status=200, time_limit=spec.time_limit)
    return Measurement(engine, server, spec.operation, result)


def full_check(query: Query, res_type: str) -> Check:
    """The whole answer: a searchset Bundle with the total, and the matches and includes of its type."""

    def check(body: bytes) -> str | None:
        bundle = json.loads(body)
        if (bundle.get("resourceType"), bundle.get("type")) != ("Bundle", "searchset"):
            return "not a searchset Bundle"
        if bundle.get("total") != query.total:
            return f"total {bundle.get('total')} where {query.total} match"
        entries = bundle.get("entry", [])
        modes = Counter(e["search"]["mode"] for e in entries)
        if (modes["match"], modes["include"]) != (query.matches, query.included):
            return f"{modes['match']} matches and {modes['include']} includes, not {query.matches}/{query.included}"
        if any(e["resource"]["resourceType"] != res_type for e in entries if e["search"]["mode"] == "match"):
            return f"a match that is not a {res_type}"
        return None

    return check


def quick_check(query: Query) -> Check:
    """The same counts found in the bytes, in microseconds, so checking does not starve the server of CPU
    (both servers write compact JSON: a resource holds no "total" and no "mode", the Bundle's total
    comes before its entries)."""

    def check(body: bytes) -> str | None:
        if b'"resourceType":"Bundle"' not in body or b'"type":"searchset"' not in body:
            return "not a searchset Bundle"
        total = _TOTAL.search(body)
        if total is None or int(total[1]) != query.total:
            return f"total {total[1].decode() if total else None} where {query.total} match"
        matches, included = body.count(b'"mode":"match"'), body.count(b'"mode":"include"')
        if (matches, included) != (query.matches, query.included):
            return f"{matches} matches and {included} includes, not {query.matches}/{query.included}"
        return None

    return check


async def _timed_bare_load(database_url: str, dataset: Dataset) -> float:
    start = time.perf_counter()
    await bare_search.add_patients(database_url, (p.resource() for p in dataset.patients))
    return time.perf_counter() - start


async def _settle(database_urls: list[str]) -> dict[str, str]:
    """ANALYZE each database, then one CHECKPOINT (if allowed); says what it did and how autovacuum is set."""
    done = {"analyze": "every table of both databases"}
    for n, url in enumerate(database_urls):
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await connection.execute("ANALYZE", timeout=600)
            if n == len(database_urls) - 1:  # one server: one checkpoint for both
                done["autovacuum"] = str(await connection.fetchval("SHOW autovacuum"))
                done["checkpoint"] = await _checkpoint(connection)
        finally:
            await connection.close()
    return done


async def _checkpoint(connection: asyncpg.Connection) -> str:
    try:
        await connection.execute("CHECKPOINT", timeout=600)
    except asyncpg.InsufficientPrivilegeError:
        return "not allowed for this role"
    return "done"
