"""``make bench``: the real server against the bare baseline, on PostgreSQL and SQLite, over mutual TLS.

For each engine both servers run side by side (one process each, a database each) and get the
same loads, taken in turns: a warm-up, then Patient create and read-by-id at concurrency 1 and
32, and read-by-id with a certificate-bound Bearer token (client_credentials from the server's own
token endpoint; the bare baseline ignores the header) at 32, each a fixed number of requests within
a time limit. Then the search benchmark on the same
servers (search_bench.py): a record set of patients and observations loaded through the real
server's API (transaction Bundles when it has them: the import, in resources/s), the same patients
into the bare baseline's JSON table, and four searches at concurrency 1 and 32, every answer
checked. The record set is 10,000 patients and 100,000 observations on PostgreSQL and a tenth of
that on SQLite (its single writer makes the load slow), times --search-scale. Prints the table and
the issues' targets and writes the same as JSON to ``tests/benchmarks/results/``. Exits 1 when any
request failed or answered wrongly, or a server would not run; a missed target is reported, not fatal.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import uvloop

from tests.benchmarks import load, mllp_load, report, search_bench, servers
from tests.benchmarks.load import Load, Target, http_request, run_load
from tests.benchmarks.report import Measurement
from tests.benchmarks.search_bench import DatasetError, SearchRun

ENGINES = ("postgresql", "sqlite")
ADMIN_URL = os.environ.get("EHR_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results"
PATIENT = (b'{"resourceType":"Patient","active":true,"name":[{"use":"official","family":"Chalmers",'
           b'"given":["Peter","James"]}],"gender":"male","birthDate":"1974-12-25",'
           b'"address":[{"line":["534 Erewhon St"],"city":"PleasantVille","postalCode":"3999"}]}')
CREATE = http_request("POST", "/fhir/Patient", PATIENT)
EXPECTED_STATUS = {"create": 201, "read": 200, "read-token": 200}


MLLP_LOADS = (Load("oru-mllp", 1, 300), Load("oru-mllp", 8, 2000))  # ORU^R01, 5 OBX each, over MLLP/TLS
MLLP_WARM_UP = (Load("oru-mllp", 8, 200),)
DEFAULT_LOADS = (
    Load("create", 1, 300), Load("create", 32, 2000), Load("read", 1, 500), Load("read", 32, 5000),
    Load("read-token", 32, 5000),
)
WARM_UP = (Load("create", 8, 200), Load("read", 8, 400))


def scaled(loads: tuple[Load, ...], factor: float) -> list[Load]:
    return [x.scaled(factor) for x in loads]


@dataclass(frozen=True)
class Plan:
    loads: list[Load]
    warm_up: list[Load]
    search_loads: list[Load]
    search_scale: float  # 0: no search benchmark
    mllp_loads: list[Load] = field(default_factory=list)
    mllp_warm_up: list[Load] = field(default_factory=list)


@dataclass
class EngineRun:
    engine: str
    measurements: list[Measurement] = field(default_factory=list)
    warm_up: list[Measurement] = field(default_factory=list)
    log_problems: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    search: SearchRun | None = None

    @property
    def failures(self) -> int:
        searched = self.search.failures if self.search else 0
        return sum(m.result.failures for m in self.measurements + self.warm_up) + searched

    @property
    def all_measurements(self) -> list[Measurement]:
        return self.measurements + (self.search.measurements if self.search else [])

    @property
    def all_warm_up(self) -> list[Measurement]:
        return self.warm_up + (self.search.warm_up if self.search else [])


async def run_engine(engine: str, plan: Plan) -> EngineRun:
    run = EngineRun(engine)
    with tempfile.TemporaryDirectory(prefix=f"ehr-bench-{engine}-") as tmp:
        work = Path(tmp)
        try:
            await _bench(run, plan, work)
        except (servers.ServerError, OSError, EOFError, ValueError, KeyError, load.ProtocolError,
                asyncpg.PostgresError, DatasetError) as exc:  # reported, then the next engine
            run.error = f"{type(exc).__name__}: {exc}"
        run.log_problems = _log_problems(work)
    return run


def _log_problems(work: Path) -> dict[str, list[str]]:
    logs = {log.stem: servers.log_problems(log) for log in sorted(work.glob("*.log"))}
    return {name: lines for name, lines in logs.items() if lines}


async def _bench(run: EngineRun, plan: Plan, work: Path) -> None:
    """Both servers side by side on their own databases; every load in turns, full first; then search."""
    async with AsyncExitStack() as stack:
        full_db = await _database(stack, run.engine, "full", work / "state" / "ehr.sqlite3")
        bare_db = await _database(stack, run.engine, "bare", work / "bare" / "bare.sqlite3")
        await servers.init_state(work / "state", full_db, work / "init.log")
        mllp_port = servers.free_port() if plan.mllp_loads else 0
        targets = {
            "full": await stack.enter_async_context(
                servers.full_server(work / "state", full_db, work / "full.log", mllp_port)
            ),
            "bare": await stack.enter_async_context(
                servers.bare_server(work / "state" / "pki", bare_db, work / "bare.log")
            ),
        }
        token = await _bearer(targets["full"], work / "state", full_db)
        requests = {name: await _requests(target, token) for name, target in targets.items()}
        for spec in plan.warm_up:
            run.warm_up += [await _measure(run.engine, n, t, spec, requests[n]) for n, t in targets.items()]
        for spec in plan.loads:
            run.measurements += [await _measure(run.engine, n, t, spec, requests[n]) for n, t in targets.items()]
        if plan.mllp_loads:
            print(f"{run.engine}: HL7 v2 over MLLP/TLS...", flush=True)
            mllp = {"full": Target("127.0.0.1", mllp_port, targets["full"].tls)}
            mllp_db = await _database(stack, run.engine, "baremllp", work / "baremllp" / "bare.sqlite3")
            mllp["bare"] = await stack.enter_async_context(
                servers.bare_mllp_server(work / "state" / "pki", mllp_db, work / "bare-mllp.log")
            )
            await _bench_mllp(run, plan, mllp)
        if plan.search_scale > 0:
            print(f"{run.engine}: search benchmark...", flush=True)
            run.search = SearchRun(max(1, round(search_bench.PATIENTS[run.engine] * plan.search_scale)))
            await search_bench.run(run.search, run.engine, targets, {"full": full_db, "bare": bare_db},
                                   plan.search_loads)


async def _bench_mllp(run: EngineRun, plan: Plan, targets: dict[str, Target]) -> None:
    """Each load's messages are new to both listeners (their own control ids), full first."""
    for n, spec in enumerate([*plan.mllp_warm_up, *plan.mllp_loads]):
        for server, target in targets.items():
            messages = mllp_load.oru_messages(spec.requests, f"{server}{n}c{spec.concurrency}")
            result = await mllp_load.run_mllp_load(target, messages, concurrency=spec.concurrency,
                                                   time_limit=spec.time_limit)
            measured = Measurement(run.engine, server, spec.operation, result)
            (run.warm_up if n < len(plan.mllp_warm_up) else run.measurements).append(measured)


async def _database(stack: AsyncExitStack, engine: str, label: str, sqlite_file: Path) -> str:
    if engine == "postgresql":
        return await stack.enter_async_context(servers.postgres_database(ADMIN_URL, label))
    sqlite_file.parent.mkdir(parents=True)
    return f"sqlite+aiosqlite:///{sqlite_file}"


async def _requests(target: Target, token: str) -> dict[str, bytes]:
    """Each operation's request: reads of a Patient created beforehand, with the certificate alone
    or with the token too (the bare baseline ignores the header)."""
    response = await load.exchange_once(target, CREATE)
    if response.status != 201:
        raise servers.ServerError(f"setup create answered {response.status}: {response.body[:300]!r}")
    path = f"/fhir/Patient/{json.loads(response.body)['id']}"
    read = http_request("GET", path)
    return {"create": CREATE, "read": read, "read-token": http_request("GET", path, headers=(token,))}


async def _bearer(target: Target, home: Path, database_url: str) -> str:
    """An Authorization header with a token from the full server's token endpoint: client_credentials
    for the demo client, authenticated by its certificate, so the token is bound to it (RFC 8705)."""
    client_id = await servers.demo_client_id(home, database_url)
    form = f"grant_type=client_credentials&scope=system%2FPatient.rs&client_id={client_id}".encode()
    response = await load.exchange_once(
        target, http_request("POST", "/oauth/token", form, content_type="application/x-www-form-urlencoded")
    )
    if response.status != 200:
        raise servers.ServerError(f"token request answered {response.status}: {response.body[:300]!r}")
    return f"Authorization: Bearer {json.loads(response.body)['access_token']}"


async def _measure(engine: str, server: str, target: Target, spec: Load, requests: dict[str, bytes]) -> Measurement:
    result = await run_load(target, requests[spec.operation], total=spec.requests, concurrency=spec.concurrency,
                            expected_status=EXPECTED_STATUS[spec.operation], time_limit=spec.time_limit)
    return Measurement(engine, server, spec.operation, result)


async def engine_versions(engines: list[str]) -> dict[str, str]:
    versions = {"sqlite": sqlite3.sqlite_version} if "sqlite" in engines else {}
    if "postgresql" in engines:
        try:
            connection = await asyncpg.connect(servers.asyncpg_dsn(ADMIN_URL))
            versions["postgresql"] = str(await connection.fetchval("SHOW server_version"))
            await connection.close()
        except (OSError, asyncpg.PostgresError) as exc:
            versions["postgresql"] = f"unreachable: {type(exc).__name__}"
    return versions


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.run", description=__doc__)
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated: postgresql,sqlite")
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests and of the search record set")
    parser.add_argument("--requests-scale", type=float, default=1.0, metavar="F", help="multiply request counts")
    parser.add_argument(
        "--search-scale", type=float, default=1.0, metavar="F",
        help="search record set: F x 10,000 patients (ten observations each) on PostgreSQL, F x 1,000 on SQLite;"
             " --quick takes a tenth; 0 skips the search benchmark",
    )
    parser.add_argument("--no-mllp", dest="mllp", action="store_false", help="skip the HL7 v2 MLLP/TLS benchmark")
    args = parser.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if unknown := set(args.engines) - set(ENGINES):
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown))}")
    if args.requests_scale <= 0:
        parser.error("--requests-scale must be positive")
    if args.search_scale < 0:
        parser.error("--search-scale must not be negative")
    args.scale = args.requests_scale / (10 if args.quick else 1)
    return args


def plan(args: argparse.Namespace) -> Plan:
    return Plan(scaled(DEFAULT_LOADS, args.scale), scaled(WARM_UP, args.scale),
                scaled(search_bench.LOADS, args.scale), args.search_scale / (10 if args.quick else 1),
                *((scaled(MLLP_LOADS, args.scale), scaled(MLLP_WARM_UP, args.scale)) if args.mllp else ([], [])))


async def bench(args: argparse.Namespace) -> int:
    todo = plan(args)
    print(f"load generator: tests/benchmarks/load.py, HTTP/1.1 keep-alive over mutual TLS ({load.WHY_NOT_AB})")
    every = todo.loads + todo.mllp_loads
    print("loads: " + ", ".join(f"{x.operation} c={x.concurrency} n={x.requests}" for x in every))
    if todo.search_scale:
        sizes = ", ".join(f"{e} {round(search_bench.PATIENTS[e] * todo.search_scale):,} patients" for e in args.engines)
        print(f"search: {sizes} (ten observations each); "
              + ", ".join(f"{x.operation} c={x.concurrency} n={x.requests}" for x in todo.search_loads))
    if (busy := os.getloadavg()[0]) > 0.5:
        print(f"note: load average {busy:.2f} before the run; other processes share the {os.cpu_count()} CPUs")
    started = datetime.now(UTC)
    runs = []
    for engine in args.engines:
        print(f"{engine}: running...", flush=True)
        runs.append(await run_engine(engine, todo))
    payload = _summary(runs, args, started, await engine_versions(args.engines))
    path = RESULTS / f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    report.write_json(path, payload)
    print(f"\nresults: {path}\nduration: {payload['seconds']:.0f} s")
    failed = any(run.error or run.failures for run in runs)
    return 1 if failed else 0


def _summary(
    runs: list[EngineRun], args: argparse.Namespace, started: datetime, versions: dict[str, str]
) -> dict[str, Any]:
    comparisons = report.compare([m for run in runs for m in run.all_measurements])
    verdicts = report.target_verdicts(comparisons) + report.mllp_verdicts(comparisons)
    verdicts += [v for run in runs if (v := report.import_verdict(run.search.load if run.search else None, run.engine))]
    _print(runs, comparisons, verdicts)
    return {
        "started": started.isoformat(), "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "options": {"engines": args.engines, "quick": args.quick, "requests_scale": args.requests_scale,
                    "search_scale": args.search_scale},
        "load_generator": f"tests/benchmarks/load.py ({load.WHY_NOT_AB})",
        "machine": report.machine_info(versions),
        "results": [m.as_json() for run in runs for m in run.all_measurements],
        "warm_up": [m.as_json() for run in runs for m in run.all_warm_up],
        "search": {run.engine: run.search.as_json() for run in runs if run.search},
        "ratios": [c.as_json() for c in comparisons], "targets": verdicts,
        "errors": {run.engine: run.error for run in runs if run.error},
        "server_log_problems": {run.engine: run.log_problems for run in runs if run.log_problems},
    }


def _print(runs: list[EngineRun], comparisons: list[report.Comparison], verdicts: list[dict[str, Any]]) -> None:
    print("\n" + report.table(comparisons))
    for run in runs:
        if run.search:
            _print_search(run.engine, run.search)
    for verdict in verdicts:
        print(f"{verdict['verdict']}  {verdict['target']}: {verdict['measured']}")
    for run in runs:
        _print_problems(run)


def _print_search(engine: str, searched: SearchRun) -> None:
    settled = ", ".join(f"{k} {v}" for k, v in searched.settled.items())
    print(f"search {engine}: {searched.patients:,} patients, {searched.observations:,} observations"
          + (f"; before searching: {settled}" if settled else ""))
    if searched.load:
        print(report.import_line(engine, searched.load))


def _print_problems(run: EngineRun) -> None:
    if run.error:
        print(f"ERROR {run.engine}: {run.error}")
    imported = run.search.load if run.search else None
    if imported and imported.error:
        print(f"FAILED {run.engine} import: {imported.error}")
    loads = [(f"{m.server} {m.operation}", m.result) for m in run.all_measurements + run.all_warm_up]
    loads += [("import", r) for r in imported.results] if imported else []
    for name, r in loads:
        if r.failures:
            print(f"FAILED {run.engine} {name} c={r.concurrency}: {r.failures} of {r.requests}"
                  f" (statuses {dict(r.statuses)}, errors {dict(r.errors)}, wrong {dict(r.wrong_answers)})")
    for log, lines in run.log_problems.items():
        print(f"server log {run.engine}/{log}: {len(lines)} problem line(s), first: {lines[0][:200]}")


def main(argv: list[str] | None = None) -> int:
    return uvloop.run(bench(_options(argv)))


if __name__ == "__main__":
    sys.exit(main())
