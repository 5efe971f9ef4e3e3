"""``ehr verify``: prove that no stored version was altered, removed, reordered or moved.

Streams every version in (type, id, version) order and checks, per row, the header hash, the
signature and that the body decrypts (AAD binds it to its row) to its content hash; per resource,
that versions run 1..n without a gap, each prevHash is the previous hash, and the signed head names
the newest version. Holds one resource's chain in memory at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from ehr.crypto.keys import KeyStore
from ehr.db.schema import resource_head, resource_version
from ehr.store.records import GENESIS, Row, check_head, check_version


@dataclass(frozen=True, slots=True)
class Problem:
    record: str      # e.g. "Patient/123/_history/2"; never resource content
    message: str


@dataclass(slots=True)
class Report:
    versions: int = 0
    resources: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify_store(engine: AsyncEngine, keys: KeyStore) -> Report:
    report = Report()
    heads = await _heads(engine)
    seen: set[tuple[str, str]] = set()
    async for key, rows in _chains(engine):
        seen.add(key)
        report.resources += 1
        report.versions += len(rows)
        report.problems += _check_chain(keys, key, rows, heads.get(key))
    for key in sorted(heads.keys() - seen):
        report.problems.append(Problem(f"{key[0]}/{key[1]}", "head names a resource with no stored versions"))
    return report


async def _heads(engine: AsyncEngine) -> dict[tuple[str, str], Row]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(resource_head))).mappings().all()
    return {(row["res_type"], row["res_id"]): row for row in rows}


async def _chains(engine: AsyncEngine) -> AsyncIterator[tuple[tuple[str, str], list[Row]]]:
    v = resource_version.c
    query = select(resource_version).order_by(v.res_type, v.res_id, v.version)
    async with engine.connect() as conn:
        key: tuple[str, str] | None = None
        rows: list[Row] = []
        async for row in (await conn.stream(query)).mappings():
            row_key = (row["res_type"], row["res_id"])
            if row_key != key and rows:
                yield key, rows  # type: ignore[misc]
                rows = []
            key = row_key
            rows.append(row)
        if rows and key is not None:
            yield key, rows


def _check_chain(
    keys: KeyStore, key: tuple[str, str], rows: list[Row], head: Row | None
) -> list[Problem]:
    problems: list[Problem] = []
    previous = GENESIS
    for expected, row in enumerate(rows, start=1):
        name = f"{key[0]}/{key[1]}/_history/{row['version']}"
        if row["version"] != expected:
            problems.append(Problem(name, f"version {expected} is missing"))
        if bytes(row["prev_hash"]) != previous:
            problems.append(Problem(name, "prevHash does not match the previous version (removed or reordered)"))
        problems += [Problem(name, message) for message in check_version(keys, row)]
        previous = bytes(row["hash"])
    problems += _check_head(keys, key, rows[-1], head)
    return problems


def _check_head(
    keys: KeyStore, key: tuple[str, str], newest: Row, head: Row | None
) -> list[Problem]:
    name = f"{key[0]}/{key[1]}"
    if head is None:
        return [Problem(name, "no signed head for this resource")]
    problems: list[Problem] = []
    if not check_head(keys, head):
        problems.append(Problem(name, "head signature does not verify"))
    if head["version"] != newest["version"] or bytes(head["hash"]) != bytes(newest["hash"]):
        problems.append(Problem(name, "newest stored version is not the signed head (a version was removed)"))
    return problems
