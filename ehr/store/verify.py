"""``ehr verify``: prove that no stored version was altered, removed, reordered or moved.

Reads every version in (type, id, version) order, in keyset pages, and checks, per row, the header
hash, the signature and that the body decrypts (AAD binds it to its row) to its content hash; per
resource, that versions run 1..n without a gap, each prevHash is the previous hash, and the signed
head names the newest version. Holds one page and one resource's chain in memory at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ehr.crypto.keys import KeyStore
from ehr.db.database import Database, Row
from ehr.store.records import GENESIS, check_head, check_version

_PAGE = 1000
_FIRST = "SELECT * FROM resource_version ORDER BY res_type, res_id, version LIMIT $1"
_NEXT = (
    "SELECT * FROM resource_version WHERE (res_type, res_id, version) > ($2, $3, $4) "
    "ORDER BY res_type, res_id, version LIMIT $1"
)


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


async def verify_store(db: Database, keys: KeyStore) -> Report:
    report = Report()
    heads = {(h["res_type"], h["res_id"]): h for h in await db.fetch_all("SELECT * FROM resource_head")}
    seen: set[tuple[str, str]] = set()
    async for key, rows in _chains(db):
        seen.add(key)
        report.resources += 1
        report.versions += len(rows)
        report.problems += _check_chain(keys, key, rows, heads.get(key))
    for key in sorted(heads.keys() - seen):
        report.problems.append(Problem(f"{key[0]}/{key[1]}", "head names a resource with no stored versions"))
    return report


async def _versions(db: Database) -> AsyncIterator[Row]:
    rows = await db.fetch_all(_FIRST, _PAGE)
    while rows:
        for row in rows:
            yield row
        last = rows[-1]
        rows = await db.fetch_all(_NEXT, _PAGE, last["res_type"], last["res_id"], last["version"])


async def _chains(db: Database) -> AsyncIterator[tuple[tuple[str, str], list[Row]]]:
    key: tuple[str, str] | None = None
    rows: list[Row] = []
    async for row in _versions(db):
        row_key = (row["res_type"], row["res_id"])
        if row_key != key and key is not None:
            yield key, rows
            rows = []
        key = row_key
        rows.append(row)
    if key is not None:
        yield key, rows


def _check_chain(keys: KeyStore, key: tuple[str, str], rows: list[Row], head: Row | None) -> list[Problem]:
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


def _check_head(keys: KeyStore, key: tuple[str, str], newest: Row, head: Row | None) -> list[Problem]:
    name = f"{key[0]}/{key[1]}"
    if head is None:
        return [Problem(name, "no signed head for this resource")]
    problems: list[Problem] = []
    if not check_head(keys, head):
        problems.append(Problem(name, "head signature does not verify"))
    if head["version"] != newest["version"] or bytes(head["hash"]) != bytes(newest["hash"]):
        problems.append(Problem(name, "newest stored version is not the signed head (a version was removed)"))
    return problems
