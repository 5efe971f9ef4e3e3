"""What a run found: the printed table, the targets, the JSON file and the machine it ran on."""

from __future__ import annotations

import json
import math
import os
import platform
import ssl
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.benchmarks.importer import PATIENTS_PER_BUNDLE, Import
from tests.benchmarks.load import LoadResult

# The issues' targets, at concurrency 32 on PostgreSQL: full throughput as a share of bare.
TARGETS = {"read": 0.50, "create": 0.30, "search-family": 0.40, "search-identifier": 0.40}
TARGET_ENGINE, TARGET_CONCURRENCY = "postgresql", 32
MLLP_TARGET, MLLP_CONNECTIONS = 300.0, 8  # HL7 v2 messages/s (issue 7)
IMPORT_TARGET = 2000.0  # resources/s by transaction Bundles on PostgreSQL, every safeguard on
PACKAGES = ("uvicorn", "uvloop", "httptools", "fastapi", "starlette", "asyncpg", "aiosqlite", "sqlalchemy")


@dataclass(frozen=True)
class Measurement:
    engine: str
    server: str  # "full" or "bare"
    operation: str  # "create", "read" or "search-..."
    result: LoadResult

    @property
    def key(self) -> tuple[str, str, int]:
        return self.engine, self.operation, self.result.concurrency

    def as_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "engine": self.engine, "server": self.server, "operation": self.operation,
            "concurrency": r.concurrency, "requests": r.requests, "completed": len(r.latencies_ms),
            "seconds": round(r.seconds, 3), "requests_per_second": round(r.requests_per_second, 1),
            "p50_ms": _round(r.percentile_ms(50)), "p99_ms": _round(r.percentile_ms(99)),
            "failures": r.failures, "statuses": {str(k): v for k, v in sorted(r.statuses.items())},
            "errors": dict(r.errors), "wrong_answers": dict(r.wrong_answers), "connections": r.connections,
        }


@dataclass(frozen=True)
class Comparison:
    full: Measurement
    bare: Measurement | None  # None where the bare baseline has no such operation

    @property
    def ratio(self) -> float:
        bare = self.bare.result.requests_per_second if self.bare else 0.0
        return self.full.result.requests_per_second / bare if bare else math.nan

    def as_json(self) -> dict[str, Any]:
        engine, operation, concurrency = self.full.key
        return {"engine": engine, "operation": operation, "concurrency": concurrency,
                "throughput_full_over_bare": _round(self.ratio, 3)}


def compare(measurements: list[Measurement]) -> list[Comparison]:
    bare = {m.key: m for m in measurements if m.server == "bare"}
    return [Comparison(m, bare.get(m.key)) for m in measurements if m.server == "full"]


def target_verdicts(comparisons: list[Comparison]) -> list[dict[str, Any]]:
    verdicts = []
    for c in comparisons:
        engine, operation, concurrency = c.full.key
        if (engine, concurrency) == (TARGET_ENGINE, TARGET_CONCURRENCY) and operation in TARGETS:
            wanted = TARGETS[operation]
            verdicts.append({
                "target": f"full {operation} >= {wanted:.0%} of bare {operation}, {engine}, c={concurrency}",
                "ratio": _round(c.ratio, 3), "threshold": wanted, "verdict": "PASS" if c.ratio >= wanted else "MISS",
                "measured": f"{c.ratio:.2f}",
            })
    return verdicts


def mllp_verdicts(comparisons: list[Comparison]) -> list[dict[str, Any]]:
    """The HL7 v2 target: ORU^R01 (5 OBX) messages/s over MLLP/TLS with 8 connections, an absolute rate."""
    verdicts = []
    for c in comparisons:
        engine, operation, concurrency = c.full.key
        if (engine, operation, concurrency) == (TARGET_ENGINE, "oru-mllp", MLLP_CONNECTIONS):
            rate = c.full.result.requests_per_second
            verdicts.append({
                "target": f"ORU^R01 over MLLP/TLS >= {MLLP_TARGET:.0f} messages/s, {engine}, {concurrency} connections",
                "messages_per_second": round(rate, 1), "p99_ms": _round(c.full.result.percentile_ms(99)),
                "threshold": MLLP_TARGET, "verdict": "PASS" if rate >= MLLP_TARGET else "MISS",
                "measured": f"{rate:,.0f} messages/s (p99 ACK {c.full.result.percentile_ms(99):.0f} ms,"
                            f" {c.ratio:.2f} of bare)",
            })
    return verdicts


def import_verdict(imported: Import | None, engine: str) -> dict[str, Any] | None:
    """The import target: PASS or MISS, N/A without transaction Bundles, FAIL if the server got them wrong."""
    if imported is None or engine != TARGET_ENGINE:
        return None
    rate = imported.resources_per_second
    if imported.error:
        verdict, measured = "FAIL", imported.error
    elif imported.unavailable:
        verdict, measured = "N/A", f"not available: {imported.unavailable}"
    else:
        verdict, measured = ("PASS" if rate >= IMPORT_TARGET else "MISS"), f"{rate:,.0f} resources/s"
    return {"target": f"import by transaction Bundles >= {IMPORT_TARGET:,.0f} resources/s, {engine}",
            "resources_per_second": round(rate, 1) if imported.method == "transaction" else None,
            "threshold": IMPORT_TARGET, "verdict": verdict, "measured": measured}


def import_line(engine: str, imported: Import) -> str:
    """How the search record set went in, for the printed report."""
    if imported.method == "transaction" and imported.results:
        r = imported.results[0]
        how = (f"{r.requests} transaction Bundles of {PATIENTS_PER_BUNDLE} patients and their observations at "
               f"c={r.concurrency} (p50 {r.percentile_ms(50):.0f} ms, "
               f"p99 {r.percentile_ms(99):.0f} ms a Bundle; the first, a probe, untimed)")
    else:
        how = "one POST per resource at c=32" + (f"; transactions not available: {imported.unavailable}"
                                                 if imported.unavailable else "")
    return (f"import {engine}: {imported.resources:,} resources in {imported.seconds:.1f} s = "
            f"{imported.resources_per_second:,.0f} resources/s, {how}")


_HEADER = ("engine", "operation", "c", "|", "full req/s", "p50 ms", "p99 ms", "fail",
           "|", "bare req/s", "p50 ms", "p99 ms", "fail", "|", "full/bare")
_WIDTHS = (10, 18, 3, 1, 10, 7, 7, 5, 1, 10, 7, 7, 5, 1, 9)
_NO_BARE = ("-", "-", "-", "-")


def table(comparisons: list[Comparison]) -> str:
    """One line per engine, operation and concurrency: full, bare (where it has the operation), and full
    throughput over bare."""
    rows = [_HEADER] + [_row(c) for c in comparisons]
    return "\n".join(_line(row) for row in rows)


def _line(row: tuple[str, ...]) -> str:
    return "  ".join(_cell(text, width, i) for i, (text, width) in enumerate(zip(row, _WIDTHS, strict=True)))


def _row(c: Comparison) -> tuple[str, ...]:
    engine, operation, concurrency = c.full.key
    bare = _figures(c.bare.result) if c.bare else _NO_BARE
    return (engine, operation, str(concurrency), "|", *_figures(c.full.result), "|", *bare, "|",
            "-" if math.isnan(c.ratio) else f"{c.ratio:.2f}")


def _figures(r: LoadResult) -> tuple[str, ...]:
    return f"{r.requests_per_second:.1f}", f"{r.percentile_ms(50):.2f}", f"{r.percentile_ms(99):.2f}", str(r.failures)


def _cell(text: str, width: int, index: int) -> str:
    return text.ljust(width) if index < 3 else text.rjust(width)


def _round(value: float, digits: int = 3) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def machine_info(engine_versions: dict[str, str]) -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(), "python": sys.version.split()[0], "openssl": ssl.OPENSSL_VERSION,
        "engines": engine_versions, "packages": {name: _version(name) for name in PACKAGES},
    }


def _cpu_model() -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
