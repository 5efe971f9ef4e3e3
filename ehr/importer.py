"""``ehr import FILE|DIR...``: load Bundles, single resources and NDJSON through the store, with
every safeguard of the REST API (validation, versioning, signing, encryption, indexing, audit).

- ``*.json``: a transaction Bundle is one transaction, a batch Bundle a batch; a collection or
  searchset Bundle, and a single resource, load like NDJSON lines.
- ``*.ndjson``: one resource per line, in transactions of ``chunk`` resources, each under its own id
  when it has one (so references between loaded resources stay right), else a new id. A chunk that
  fails is retried entry by entry as a batch, so one bad line costs only itself; its errors are
  reported by file and line, never with the offending values.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ehr.context import AccessContext
from ehr.crypto.canonical import InvalidJSON, parse_json
from ehr.errors import Category, EhrError
from ehr.store.bundle import Outcome, Request
from ehr.store.bundle_entries import parse_entry, resource_request
from ehr.store.service import Store

MAX_REPORTED = 50


_ENTRY_PREFIX = re.compile(r"^entry \d+: ")


@dataclass(slots=True)
class Summary:
    files: int = 0
    loaded: int = 0          # entries that succeeded (written, or a conditional create that matched)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    file_start: int = 0      # loaded + failed when the current file began

    def fail(self, where: str, message: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(f"{where}: {_ENTRY_PREFIX.sub('', message)}")

    def count(self, outcomes: list[Outcome]) -> None:
        self.loaded += sum(1 for outcome in outcomes if outcome.error is None)

    @property
    def rate(self) -> float:
        return self.loaded / max(time.monotonic() - self.started, 1e-9)


Progress = Callable[[Summary, int], None]  # (summary, entries in the current file)


def files_of(paths: list[Path]) -> list[Path]:
    """The files to load, directories expanded (sorted, *.json and *.ndjson)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson") and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise EhrError(Category.NOT_FOUND, f"no such file or directory: {path}")
    return found


async def load(store: Store, ctx: AccessContext, paths: list[Path], *, chunk: int, progress: Progress) -> Summary:
    summary = Summary()
    for path in files_of(paths):
        summary.files += 1
        summary.file_start = summary.loaded + summary.failed
        if path.suffix == ".ndjson":
            await _ndjson(store, ctx, path, chunk, summary, progress)
        else:
            await _json(store, ctx, path, chunk, summary, progress)
    return summary


async def _ndjson(
    store: Store, ctx: AccessContext, path: Path, chunk: int, summary: Summary, progress: Progress
) -> None:
    with path.open("rb") as handle:
        total = sum(1 for line in handle if line.strip())
    requests: list[Request] = []
    lines: list[int] = []
    for number, resource in _lines(path, summary):
        try:
            requests.append(resource_request(len(requests), resource))
            lines.append(number)
        except EhrError as err:
            summary.fail(f"{path.name}:{number}", err.message)
        if len(requests) == chunk:
            await _chunk(store, ctx, requests, [f"{path.name}:{n}" for n in lines], summary)
            requests, lines = [], []
            progress(summary, total)
    if requests:
        await _chunk(store, ctx, requests, [f"{path.name}:{n}" for n in lines], summary)
    progress(summary, total)


def _lines(path: Path, summary: Summary) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, parse_json(line)
            except InvalidJSON:
                summary.fail(f"{path.name}:{number}", "not valid JSON")


async def _json(
    store: Store, ctx: AccessContext, path: Path, chunk: int, summary: Summary, progress: Progress
) -> None:
    try:
        document = parse_json(await asyncio.to_thread(path.read_bytes))
    except InvalidJSON:
        summary.fail(path.name, "not valid JSON")
        return
    kind = document.get("type") if isinstance(document, dict) and document.get("resourceType") == "Bundle" else None
    if kind in ("transaction", "batch"):
        entries = document.get("entry") or []
        try:
            requests = [_write(store, n, e) for n, e in enumerate(entries)]
            run = store.transaction if kind == "transaction" else store.batch
            outcomes = await run(ctx, requests)
        except EhrError as err:
            summary.fail(path.name, err.message)
            return
        for request, outcome in zip(requests, outcomes, strict=True):
            if outcome.error is not None:
                summary.fail(f"{path.name} entry {request.index}", outcome.error.message)
        summary.count(outcomes)
        progress(summary, len(entries))
        return
    resources = [e.get("resource") for e in document.get("entry") or []] if kind else [document]
    requests = []
    for n, resource in enumerate(resources):
        try:
            requests.append(resource_request(len(requests), resource))
        except EhrError as err:
            summary.fail(f"{path.name} entry {n}", err.message)
    for start in range(0, len(requests), chunk):
        part = requests[start : start + chunk]
        await _chunk(store, ctx, part, [f"{path.name} entry {r.index + start}" for r in part], summary)
        progress(summary, len(resources))


def _write(store: Store, index: int, entry: Any) -> Request:
    if not isinstance(entry, dict):
        raise EhrError(Category.STRUCTURE, f"entry {index} is not an object")
    parsed = parse_entry(store.indexer.base, index, entry)
    if not isinstance(parsed, Request):
        raise EhrError(Category.INVALID, f"entry {index}: an import holds writes only (no GET)")
    return parsed


async def _chunk(store: Store, ctx: AccessContext, requests: list[Request], where: list[str], summary: Summary) -> None:
    """One transaction; when it fails, the same entries as a batch, so only the bad ones are lost."""
    for n, request in enumerate(requests):
        request.index = n
    try:
        summary.count(await store.transaction(ctx, requests))
        return
    except EhrError:
        pass
    for request in requests:
        request.assigned, request.existing = None, False
    outcomes = await store.batch(ctx, requests)
    for label, outcome in zip(where, outcomes, strict=True):
        if outcome.error is not None:
            summary.fail(label, outcome.error.message)
    summary.count(outcomes)


def bar(stream: TextIO = sys.stderr) -> Progress:
    """A one-line progress bar for the current file on ``stream`` (redrawn in place on a terminal)."""

    def show(summary: Summary, total: int) -> None:
        done = summary.loaded + summary.failed - summary.file_start
        filled = int(30 * min(done / total, 1)) if total else 30
        end = "\r" if stream.isatty() else "\n"
        stream.write(f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}  {summary.rate:,.0f} resources/s{end}")
        stream.flush()

    return show
