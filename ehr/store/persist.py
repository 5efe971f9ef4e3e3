"""Writing versions: every table a write touches, for one version or a thousand, as a few statements.

A :class:`Pending` is one version ready to go (sealed, signed, indexed, audited). ``statements``
turns any number of them into one INSERT per table (the versions, new heads, index rows, audit
events), one UPDATE for moved heads and one DELETE per index table for replaced rows. On
PostgreSQL the execution joins them into one statement whose text never changes (ehr/db/bulk.py),
so a single create and a 500-entry transaction both cost one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ehr.audit.log import EVENT_COLUMNS
from ehr.audit.log import insert_statements as audit_statements
from ehr.db import bulk
from ehr.db.database import CopyExecutor, Database, Executor, Statement
from ehr.store import sql
from ehr.store.index import COLUMNS, TABLES, IndexRows

_HEAD_MOVES = ", ".join(f"{c} = u.{c}" for c in sql.HEAD_COLUMNS[2:])
_UPDATE_HEADS = (
    f"UPDATE resource_head AS h SET {_HEAD_MOVES} FROM unnest({bulk.arrays('resource_head', sql.HEAD_COLUMNS)}) "
    f"AS u({', '.join(sql.HEAD_COLUMNS)}) WHERE h.res_type = u.res_type AND h.res_id = u.res_id"
)


@dataclass(frozen=True, slots=True)
class Pending:
    version: dict[str, Any]      # the resource_version row
    head: dict[str, Any]         # the resource_head row
    new_head: bool               # no head before: INSERT (else UPDATE)
    index: IndexRows | None      # None: a delete, no rows
    audit: dict[str, Any]        # the audit_event row

    @property
    def key(self) -> tuple[str, str]:
        return self.version["res_type"], self.version["res_id"]


Rows = tuple[str, tuple[str, ...], Sequence[Sequence[Any]]]  # (table, columns, rows)
COPY_FROM = 32  # pending versions from which PostgreSQL gets COPY instead of array parameters


def inserts(pendings: Sequence[Pending]) -> list[Rows]:
    """The rows to insert, per table (versions, new heads, index rows, audit events)."""
    out: list[Rows] = [
        ("resource_version", sql.VERSION_COLUMNS, [[p.version[c] for c in sql.VERSION_COLUMNS] for p in pendings]),
        ("resource_head", sql.HEAD_COLUMNS, [[p.head[c] for c in sql.HEAD_COLUMNS] for p in pendings if p.new_head]),
    ]
    for table in TABLES:
        rows = [row for p in pendings if p.index is not None for row in p.index.rows[table]]
        out.append((table, ("res_type", "res_id", *COLUMNS[table]), rows))
    out.append(("audit_event", EVENT_COLUMNS, [[p.audit[c] for c in EVENT_COLUMNS] for p in pendings]))
    return out


def replacements(dialect: str, pendings: Sequence[Pending]) -> list[Statement]:
    """What must change before the inserts: moved heads, and the replaced versions' index rows."""
    out = _moved_heads(dialect, [p for p in pendings if not p.new_head])
    replaced = [p.key for p in pendings if not p.new_head]
    for table in TABLES:
        out += bulk.delete_resources(dialect, table, replaced)
    return out


def statements(dialect: str, pendings: Sequence[Pending]) -> list[Statement]:
    """Everything as statements (one fixed-text statement on PostgreSQL, see ehr/db/database.py)."""
    out = replacements(dialect, pendings)
    for table, columns, rows in inserts(pendings):
        if table != "audit_event":
            out += bulk.insert(dialect, table, columns, rows)
    return out + audit_statements([p.audit for p in pendings], dialect)


async def write(tx: Executor | Database, dialect: str, pendings: Sequence[Pending]) -> None:
    """Write ``pendings``: as one statement, or for many on PostgreSQL by binary COPY (asyncpg's
    array parameters check every element's type in Python: the larger cost of a bulk load)."""
    if dialect != "postgresql" or len(pendings) < COPY_FROM or not isinstance(tx, CopyExecutor):
        await tx.execute_all(statements(dialect, pendings))
        return
    await tx.execute_all(replacements(dialect, pendings))
    for table, columns, rows in inserts(pendings):
        await tx.copy(table, columns, rows)
    xid = await tx.fetch_one("SELECT pg_current_xact_id()::text::bigint AS xid")
    assert xid is not None
    await tx.copy("audit_pending", ("event_id", "xid"), [[p.audit["id"], xid["xid"]] for p in pendings])


def _moved_heads(dialect: str, moved: list[Pending]) -> list[Statement]:
    rows = [[p.head[c] for c in sql.HEAD_COLUMNS] for p in moved]
    if dialect == "postgresql":
        return [(_UPDATE_HEADS, bulk.columnwise(rows, len(sql.HEAD_COLUMNS)))]
    return [(sql.UPDATE_HEAD, row) for row in rows]
