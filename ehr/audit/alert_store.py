"""Alerts raised as audit records arrive: the monitor that runs the rules of ehr/audit/alerts.py over
every sealed AuditEvent, the ``audit_alert`` table (append-only), and its listing for review
(docs/adr/0007-audit-alerts.md).

The sealer hands each batch it chained to :meth:`AlertMonitor.on_sealed`, after the commit; that only
queues it, and a background task evaluates, so no request waits for a rule. Every process's monitor
follows the whole chain in order: its own batches come from its sealer for free, a batch sealed by
another process (or the CLI) is read back by chain position when the next batch does not follow on.
After a start, a failure or a long gap it rebuilds its windows by replaying the last window of the
chain and remembers the alerts already stored. Alert ids are derived from (rule, subject, tipping
event), so processes that evaluate the same events store one alert; only the insert that wins posts
it to the webhook.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from ehr.audit.alerts import Alert, AlertSettings, Rules, Seen, Windows, evaluate, is_refusal
from ehr.audit.log import aad
from ehr.audit.webhook import Webhook
from ehr.crypto.canonical import canonical_json, parse_json
from ehr.crypto.envelope import Sealed, open_sealed
from ehr.crypto.keys import KeyStore
from ehr.db.database import Conflict, Database, Row, placeholders
from ehr.errors import Category, EhrError
from ehr.store.records import instant

log = logging.getLogger("ehr.audit.alerts")

_PAGE = 5000            # rows per read-back query
_REPLAY_MAX = 200_000   # events replayed at most when rebuilding the windows
_INBOX = 256            # batches waiting; beyond it the oldest is dropped and read back as a gap
_CHUNK = 500            # events evaluated between yields to the event loop
_COLUMNS = "e.recorded_us, e.action, e.subtype, e.outcome, e.agent, e.patient, e.purpose, e.address"
_CHAINED = (
    f"SELECT c.pos, e.id AS event_id, {_COLUMNS} FROM audit_chain c JOIN audit_event e ON e.id = c.event_id "
    "WHERE c.pos >= $1 AND c.pos < $2 ORDER BY c.pos LIMIT $3"
)
_HEAD_AT = "SELECT pos FROM audit_checkpoint WHERE ts_us <= $1 ORDER BY pos DESC LIMIT 1"
_RAISED_SINCE = (
    "SELECT a.rule, a.subject, e.recorded_us FROM audit_alert a JOIN audit_event e ON e.id = a.event_id "
    "WHERE a.raised_us > $1"
)
_BODIES = "SELECT id, kek_id, wrapped_key, nonce, ciphertext FROM audit_event WHERE id IN ({})"
_INSERT = "INSERT INTO audit_alert (id, raised_us, rule, subject, detail, event_id) VALUES ($1, $2, $3, $4, $5, $6)"
_LIST = "SELECT id, raised_us, rule, subject, detail, event_id FROM audit_alert WHERE raised_us >= $1"


class Clock(Protocol):
    def now_us(self) -> int: ...


class MonitorSettings(AlertSettings, Protocol):
    alert_webhook_url: SecretStr | None
    alert_webhook_ca: Path | None


# -- the table ---------------------------------------------------------------------------------------


def payload(alert: Alert, raised_us: int) -> dict[str, Any]:
    return {"id": alert.id, "raised": instant(raised_us), "rule": alert.rule, "subject": alert.subject,
            "event_id": alert.last_event, "detail": alert.detail()}


async def store_alert(db: Database, alert: Alert, raised_us: int) -> bool:
    """Insert the alert; False when it is there already (another process raised it first)."""
    detail = canonical_json(alert.detail()).decode()
    try:
        await db.execute(_INSERT, alert.id, raised_us, alert.rule, alert.subject, detail, alert.last_event)
    except Conflict:
        return False
    return True


async def list_alerts(db: Database, since_us: int = 0, rule: str | None = None) -> list[Row]:
    """Alerts raised at or after ``since_us``, of one rule or all, oldest first."""
    if rule is None:
        return await db.fetch_all(_LIST + " ORDER BY raised_us, id", since_us)
    return await db.fetch_all(_LIST + " AND rule = $2 ORDER BY raised_us, id", since_us, rule)


def parse_since(text: str) -> int:
    """An ISO 8601 date or instant (UTC unless it names an offset) as microseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise EhrError(Category.INVALID, "--since must be an ISO 8601 instant, e.g. 2026-01-31T08:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def format_alert(row: Row) -> str:
    return f"{instant(int(row['raised_us']))}  {row['rule']}  {row['subject']}  {row['detail']}"


# -- the monitor -------------------------------------------------------------------------------------


def _seen(pos: int, row: Row, refused: set[str]) -> Seen:
    return Seen(pos, row["event_id"], int(row["recorded_us"]), row["action"], row["subtype"], row["outcome"],
                row["agent"], row["patient"], row["purpose"], row["address"], row["event_id"] in refused)


class AlertMonitor:
    def __init__(
        self, db: Database, keys: KeyStore, clock: Clock, rules: Rules, webhook: Webhook | None = None
    ) -> None:
        self._db = db
        self._keys = keys
        self._clock = clock
        self._rules = rules
        self._webhook = webhook
        self._windows = Windows(rules)
        self._next_pos: int | None = None  # the chain position this monitor evaluates next; None: rebuild
        self._inbox: deque[tuple[int, Sequence[Row]]] = deque(maxlen=_INBOX)
        self._wake = asyncio.Event()
        self._draining = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @classmethod
    def from_settings(cls, settings: MonitorSettings, db: Database, keys: KeyStore, clock: Clock) -> AlertMonitor:
        """ValueError on malformed hours, time zone or webhook URL (at start-up, not at the first alert)."""
        url = settings.alert_webhook_url
        webhook = Webhook(url.get_secret_value(), ca_file=settings.alert_webhook_ca) if url else None
        return cls(db, keys, clock, Rules.from_settings(settings), webhook)

    def on_sealed(self, first_pos: int, rows: Sequence[Row]) -> None:
        """The sealer's observer: ``rows`` (with the columns of ``_COLUMNS`` and ``event_id``) were just
        chained at ``first_pos``, ``first_pos + 1``, ... Queues them and returns; never raises."""
        if rows:
            self._inbox.append((first_pos, rows))
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        if self._webhook is not None:
            self._webhook.start()

    async def stop(self, grace: float = 5.0) -> None:
        """Evaluate what the last seal handed over and let the webhook send, within ``grace`` seconds each."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=grace)
            if not done:
                self._task.cancel()
                with suppress(asyncio.CancelledError):
                    await self._task
        if self._webhook is not None:
            await self._webhook.stop(grace)

    async def _run(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            await self.drain()
        await self.drain()

    async def drain(self) -> None:
        """Evaluate every queued batch, in order."""
        async with self._draining:
            while self._inbox:
                first_pos, rows = self._inbox.popleft()
                try:
                    await self._batch(first_pos, rows)
                except (Exception, asyncio.CancelledError) as exc:
                    self._next_pos = None  # rebuild from the database at the next batch
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    log.error("audit alert evaluation failed: %s", type(exc).__name__)

    async def _batch(self, first_pos: int, rows: Sequence[Row]) -> None:
        await self._catch_up(first_pos, min(int(row["recorded_us"]) for row in rows))
        start = max(0, (self._next_pos or first_pos) - first_pos)  # skip what was already read back
        await self._evaluate([(first_pos + n, row) for n, row in enumerate(rows)][start:])

    async def _catch_up(self, first_pos: int, batch_us: int) -> None:
        """Evaluate the chain between what this monitor saw last and ``first_pos``."""
        if self._next_pos is None or first_pos - self._next_pos > _REPLAY_MAX:
            self._next_pos = await self._rebuild(first_pos, batch_us)
        while self._next_pos < first_pos:
            rows = await self._db.fetch_all(_CHAINED, self._next_pos, first_pos, _PAGE)
            if not rows:
                return
            await self._evaluate([(int(row["pos"]), row) for row in rows])
            self._next_pos = int(rows[-1]["pos"]) + 1

    async def _rebuild(self, first_pos: int, batch_us: int) -> int:
        """Fresh windows that remember the alerts stored lately; returns where to replay from."""
        self._windows = Windows(self._rules)
        for row in await self._db.fetch_all(_RAISED_SINCE, batch_us - self._rules.longest_us):
            self._windows.remember(row["rule"], row["subject"], int(row["recorded_us"]))
        span = max(self._rules.mass_window_us, self._rules.refusals_window_us)
        head = await self._db.fetch_one(_HEAD_AT, batch_us - span)
        start = int(head["pos"]) + 1 if head else 1
        return min(max(start, first_pos - _REPLAY_MAX), first_pos)

    async def _evaluate(self, rows: list[tuple[int, Row]]) -> None:
        refused = await self._refused([row for _, row in rows])
        for start in range(0, len(rows), _CHUNK):
            events = [_seen(pos, row, refused) for pos, row in rows[start : start + _CHUNK]]
            for alert in evaluate(self._windows, events):
                await self._raise(alert)
            self._next_pos = events[-1].pos + 1
            self._windows.expire(events[-1].recorded_us)
            await asyncio.sleep(0)  # a large batch must not hold up the requests of this process

    async def _refused(self, rows: list[Row]) -> set[str]:
        """Ids of the refusals among ``rows`` (see :func:`is_refusal`); opens only failed events that
        are not ``authenticate`` events, for their outcomeDesc."""
        refused = {r["event_id"] for r in rows if is_refusal(r["outcome"], r["subtype"], None)}
        unsure = [r["event_id"] for r in rows if r["outcome"] == "4" and r["event_id"] not in refused]
        for start in range(0, len(unsure), _CHUNK):
            part = unsure[start : start + _CHUNK]
            for body in await self._db.fetch_all(_BODIES.format(placeholders(1, len(part))), *part):
                if is_refusal("4", "", self._outcome_desc(body)):
                    refused.add(body["id"])
        return refused

    def _outcome_desc(self, body: Row) -> str | None:
        sealed = Sealed(body["kek_id"], bytes(body["wrapped_key"]), bytes(body["nonce"]), bytes(body["ciphertext"]))
        try:
            desc = parse_json(open_sealed(self._keys, sealed, aad(body["id"]))).get("outcomeDesc")
        except Exception as exc:  # noqa: BLE001 - `ehr audit verify` reports it; review goes on
            log.error("audit alert review could not open an event: %s", type(exc).__name__)
            return None
        return desc if isinstance(desc, str) else None

    async def _raise(self, alert: Alert) -> None:
        raised_us = self._clock.now_us()
        if not await store_alert(self._db, alert, raised_us):
            return
        log.warning("audit alert %s raised: rule %s", alert.id, alert.rule)
        if self._webhook is not None:
            self._webhook.submit(payload(alert, raised_us))
