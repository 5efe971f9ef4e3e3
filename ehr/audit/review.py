"""Reviewing the audit log: HIPAA 164.312(b) ("record and examine activity") and the Privacy Rule's
accounting of disclosures (164.528), as FHIR AuditEvent search, read and ``Patient/$access-log``.

Like the store (DESIGN.md "one door"), this is the only way the API reads ``audit_event``: each
call is authorized here (``r`` and, for searches, ``s`` on AuditEvent), and leaves exactly one
AuditEvent of its own, whatever the outcome, with the query string as received:

- search: subtype ``search-type`` on AuditEvent;
- read: subtype ``read`` of ``AuditEvent/{id}``, naming the patient the read event is about;
- $access-log: subtype ``operation`` on ``Patient/{id}``, naming that patient, so a patient's
  accounting also shows who reviewed it;
- any change (create, update, patch, delete), history and vread: refused (405), and recorded.

Events come back as they were sealed (canonical JSON bytes), newest first, keyset-paged on
(recorded_us, seq) so that events arriving while someone pages neither repeat nor shift a page.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog, aad
from ehr.audit.search_params import (
    AuditQuery,
    Condition,
    Criterion,
    Entity,
    Match,
    Paging,
    Period,
    Position,
    encode_cursor,
    parse_access_log,
    parse_search,
)
from ehr.context import AccessContext
from ehr.crypto.envelope import DecryptionError, Sealed, open_sealed
from ehr.crypto.keys import KeyStore
from ehr.db.database import Database, Row
from ehr.errors import Category, EhrError
from ehr.store import policy
from smart_auth.scopes import Letter

log = logging.getLogger("ehr.audit")

_SELECT = "SELECT seq, id, recorded_us, patient, content_hash, kek_id, wrapped_key, nonce, ciphertext FROM audit_event"
_ORDER = " ORDER BY recorded_us DESC, seq DESC"
# Written so that an index on (x, recorded_us) serves it on both engines (no row-value comparison).
_BEFORE = "recorded_us <= {0} AND (recorded_us < {0} OR seq < {1})"
_UNVERSIONED = frozenset({"history-type", "history-instance", "vread"})
_COLUMNS = frozenset({"id", "action", "subtype", "outcome", "agent", "patient", "address"})


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: str
    body: bytes  # the AuditEvent, canonical JSON, exactly as sealed


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[StoredEvent]
    total: int                # every match, not only this page
    query: AuditQuery         # what was applied: count, cursor, parameters (for the links)
    next_cursor: str | None   # None on the last page


class AuditReview:
    def __init__(self, db: Database, keys: KeyStore, audit: AuditLog, *, paging: Paging | None = None) -> None:
        self._db = db
        self._keys = keys
        self._audit = audit
        self._paging = paging or Paging()

    async def search(
        self, ctx: AccessContext, params: Sequence[tuple[str, str]], *, lenient: bool = False, query: str | None = None
    ) -> AuditPage:
        """``GET [base]/AuditEvent?params``."""
        async with self._audit.audited(ctx, Interaction("search-type", "AuditEvent", query=query)):
            _authorize(ctx, "r", "s")
            return await self._page(parse_search(params, lenient=lenient, paging=self._paging))

    async def access_log(
        self,
        ctx: AccessContext,
        patient: str,
        params: Sequence[tuple[str, str]],
        *,
        lenient: bool = False,
        query: str | None = None,
    ) -> AuditPage:
        """``GET [base]/Patient/{patient}/$access-log?start=&end=``: every event about the patient."""
        what = Interaction("operation", "Patient", patient, patient=patient, query=query)
        async with self._audit.audited(ctx, what):
            _authorize(ctx, "r", "s")
            return await self._page(parse_access_log(patient, params, lenient=lenient, paging=self._paging))

    async def read(self, ctx: AccessContext, event_id: str) -> StoredEvent:
        """``GET [base]/AuditEvent/{id}``."""
        async with self._audit.audited(ctx, Interaction("read", "AuditEvent", event_id)) as event:
            _authorize(ctx, "r")
            row = await self._db.fetch_one(f"{_SELECT} WHERE id = $1", event_id)
            if row is None:
                raise EhrError(Category.NOT_FOUND, "AuditEvent not found")
            event.patient = row["patient"]
            return _open(self._keys, row)

    async def refuse(self, ctx: AccessContext, subtype: str, event_id: str | None = None) -> NoReturn:
        """What the log does not offer: create, update, patch or delete (it has no way to be
        changed), and history or vread (an AuditEvent has one version)."""
        async with self._audit.audited(ctx, Interaction(subtype, "AuditEvent", event_id)):
            if subtype in _UNVERSIONED:
                raise EhrError(Category.NOT_SUPPORTED, "AuditEvents have no history: read AuditEvent/{id}")
            raise EhrError(Category.NOT_SUPPORTED, "the audit log is append-only: AuditEvents cannot be changed")
        raise AssertionError("audited() re-raises")  # pragma: no cover - typed as able to swallow

    async def _page(self, query: AuditQuery) -> AuditPage:
        where, args = _where(query.criteria)
        total = await self._db.fetch_one(f"SELECT count(*) AS n FROM audit_event{_clause(where)}", *args)
        if query.after is not None:
            marks = (f"${len(args) + 1}", f"${len(args) + 2}")
            where = [*where, _BEFORE.format(*marks)]
            args = [*args, query.after.recorded_us, query.after.seq]
        limit = f" LIMIT {query.count + 1:d}"
        rows = await self._db.fetch_all(f"{_SELECT}{_clause(where)}{_ORDER}{limit}", *args)
        events = [_open(self._keys, row) for row in rows[: query.count]]
        last = rows[query.count - 1] if query.count and len(rows) > query.count else None
        following = encode_cursor(Position(int(last["recorded_us"]), int(last["seq"]))) if last else None
        return AuditPage(events, int(total["n"]) if total else 0, query, following)


def _authorize(ctx: AccessContext, *letters: Letter) -> None:
    for letter in letters:
        policy.require(ctx, "AuditEvent", letter)


def _where(criteria: Sequence[Criterion]) -> tuple[list[str], list[Any]]:
    """SQL conditions (all must hold) and their arguments, for the criteria of a query."""
    args: list[Any] = []

    def mark(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    clauses = []
    for criterion in criteria:
        parts = [_condition(condition, mark) for condition in criterion]
        clauses.append(parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")")
    return clauses, args


def _condition(condition: Condition, mark: Callable[[Any], str]) -> str:
    if isinstance(condition, Match):
        if condition.column not in _COLUMNS:  # names come from search_params only; a second lock
            raise ValueError("not a searchable column")
        if not condition.values:
            return "1 = 1" if condition.exclude else "1 = 0"
        marks = ", ".join(mark(value) for value in condition.values)
        return f"{condition.column} {'NOT IN' if condition.exclude else 'IN'} ({marks})"
    if isinstance(condition, Period):
        bounds = []
        if condition.low is not None:
            bounds.append(f"recorded_us {'<' if condition.outside else '>='} {mark(condition.low)}")
        if condition.high is not None:
            bounds.append(f"recorded_us {'>=' if condition.outside else '<'} {mark(condition.high)}")
        return "(" + (" OR " if condition.outside else " AND ").join(bounds or ["1 = 1"]) + ")"
    return _entity(condition, mark)


def _entity(entity: Entity, mark: Callable[[Any], str]) -> str:
    """The event is about the resource (entity_type, entity_id); an event that names a patient has
    that patient as an entity too (BALP), so Patient/x also matches the patient column."""
    if entity.res_type is None:
        return f"(entity_id = {mark(entity.res_id)} OR patient = {mark(entity.res_id)})"
    about = f"(entity_type = {mark(entity.res_type)} AND entity_id = {mark(entity.res_id)})"
    if entity.res_type == "Patient":
        return f"({about} OR patient = {mark(entity.res_id)})"
    return about


def _clause(where: list[str]) -> str:
    return " WHERE " + " AND ".join(where) if where else ""


def _open(keys: KeyStore, row: Row) -> StoredEvent:
    """The sealed event, checked against its content hash; a record that does not open is a fault
    of the log (``ehr audit verify`` tells what), never skipped."""
    sealed = Sealed(row["kek_id"], bytes(row["wrapped_key"]), bytes(row["nonce"]), bytes(row["ciphertext"]))
    try:
        body = open_sealed(keys, sealed, aad(row["id"]))
    except DecryptionError:
        body = b""
    if hashlib.sha256(body).digest() != bytes(row["content_hash"]):
        log.error("audit event %s does not open or does not match its hash", row["id"])
        raise EhrError(Category.INTERNAL, "an audit record failed its integrity check; run 'ehr audit verify'")
    return StoredEvent(row["id"], body)
