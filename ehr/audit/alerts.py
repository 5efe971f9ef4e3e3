"""Alert rules over the audit log: 45 CFR 164.312(b) asks for audit controls that record AND examine
activity, and auditors cite the failure to review. Pure: no IO; the monitor (ehr/audit/alert_store.py)
feeds sealed events in chain order and stores what :meth:`Windows.observe` says is due
(docs/adr/0007-audit-alerts.md).

Rules (thresholds and windows from the settings; a window is the half-open interval (t - T, t]
ending at the event being looked at, times are the events' ``recorded`` times):

- ``mass-access``: one agent read or searched more than N distinct patients within T (successful
  read/search events that name a patient);
- ``off-hours``: a successful interaction touching a patient outside the working hours of a time zone;
- ``repeated-refusals``: more than N refusals within T from one agent, or from one network address
  (a refusal is an event with outcome 4 whose outcomeDesc starts with "401 " or "403 ": see
  :func:`is_refusal`; the agent ``anonymous`` counts by address only);
- ``break-glass``: any event whose purpose of use is BTG.

One alert per rule and subject per window: once an alert is due, the same rule stays quiet for that
subject until the window (T, or ``quiet`` for off-hours and break-glass) after the tipping event has
passed. Alerts carry ids, counts and times only, never patient ids, names or resource content.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ehr.store.records import instant

MASS_ACCESS, OFF_HOURS, REFUSALS, BREAK_GLASS = "mass-access", "off-hours", "repeated-refusals", "break-glass"
RULES = (MASS_ACCESS, OFF_HOURS, REFUSALS, BREAK_GLASS)
BTG = "BTG"  # v3-ActReason: break the glass
ANONYMOUS = "anonymous"
_MINUTE_US = 60_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ALERT_NS = uuid.UUID("6f0c2f1e-6c1d-4d53-9a43-0e4b5c4f7a11")


@dataclass(frozen=True, slots=True)
class Seen:
    """One sealed AuditEvent as the rules see it: its columns, plus whether it was a refusal."""

    pos: int
    event_id: str
    recorded_us: int
    action: str
    subtype: str
    outcome: str
    agent: str
    patient: str | None = None
    purpose: str | None = None
    address: str | None = None
    refused: bool = False


def is_refusal(outcome: str, subtype: str, outcome_desc: str | None) -> bool:
    """Authentication or authorization refused: outcome 4 with an HTTP 401/403 outcomeDesc. Every
    failed ``authenticate`` event is one (the edge records only 401 and 403 under that subtype)."""
    if outcome != "4":
        return False
    return subtype == "authenticate" or (outcome_desc or "")[:4] in ("401 ", "403 ")


@dataclass(frozen=True, slots=True)
class Hours:
    """Working hours [start, end) in an IANA time zone; start after end wraps midnight, start equal
    to end means no off-hours at all."""

    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, spec: str, zone: str) -> Hours:
        """``"07:00-19:00"`` in ``"Europe/Berlin"``; ValueError when either is malformed."""
        try:
            first, _, last = spec.partition("-")
            return cls(time.fromisoformat(first.strip()), time.fromisoformat(last.strip()), ZoneInfo(zone))
        except (ValueError, ZoneInfoNotFoundError) as exc:
            raise ValueError(f"alert hours must look like 07:00-19:00 in an IANA time zone: {exc}") from None

    def off(self, ts_us: int) -> bool:
        if self.start == self.end:
            return False
        local = (_EPOCH + timedelta(microseconds=ts_us)).astimezone(self.zone).time()
        if self.start < self.end:
            return not self.start <= local < self.end
        return self.end <= local < self.start


class AlertSettings(Protocol):
    alert_mass_access_patients: int
    alert_mass_access_minutes: float
    alert_refusals: int
    alert_refusals_minutes: float
    alert_hours: str
    alert_timezone: str
    alert_quiet_minutes: float


@dataclass(frozen=True, slots=True)
class Rules:
    hours: Hours
    mass_patients: int = 50
    mass_window_us: int = 10 * _MINUTE_US
    refusals: int = 5
    refusals_window_us: int = 5 * _MINUTE_US
    quiet_us: int = 60 * _MINUTE_US

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> Rules:
        return cls(
            hours=Hours.parse(settings.alert_hours, settings.alert_timezone),
            mass_patients=settings.alert_mass_access_patients,
            mass_window_us=int(settings.alert_mass_access_minutes * _MINUTE_US),
            refusals=settings.alert_refusals,
            refusals_window_us=int(settings.alert_refusals_minutes * _MINUTE_US),
            quiet_us=int(settings.alert_quiet_minutes * _MINUTE_US),
        )

    @property
    def longest_us(self) -> int:
        return max(self.mass_window_us, self.refusals_window_us, self.quiet_us)


@dataclass(frozen=True, slots=True)
class Alert:
    rule: str
    subject: str           # an agent id or a network address
    subject_type: str      # "agent" | "address"
    count: int             # events (distinct patients for mass-access) in the window
    threshold: int         # the rule fires when count exceeds this
    window_us: int
    first_event: str
    first_us: int
    last_event: str        # the event that tipped the alert
    last_us: int

    @property
    def id(self) -> str:
        """The same in every process that evaluates the same events: a second insert conflicts."""
        return str(uuid.uuid5(_ALERT_NS, f"{self.rule}\n{self.subject}\n{self.last_event}"))

    def detail(self) -> dict[str, Any]:
        """What is stored and sent: counts, ids and times; no patient, name or resource content."""
        return {
            "rule": self.rule, "subject": self.subject, "subject_type": self.subject_type,
            "count": self.count, "threshold": self.threshold, "window_seconds": self.window_us // 1_000_000,
            "first_event": self.first_event, "first_recorded": instant(self.first_us),
            "last_event": self.last_event, "last_recorded": instant(self.last_us),
        }


def _single(rule: str, event: Seen, window_us: int) -> Alert:
    return Alert(rule, event.agent, "agent", 1, 0, window_us, event.event_id, event.recorded_us,
                 event.event_id, event.recorded_us)


@dataclass(slots=True)
class Windows:
    """Every subject's sliding windows, fed events in chain order."""

    rules: Rules
    _patients: dict[str, OrderedDict[str, tuple[int, str]]] = field(default_factory=dict)
    _refusals: dict[tuple[str, str], deque[tuple[int, str]]] = field(default_factory=dict)  # (kind, subject)
    _quiet: dict[tuple[str, str], int] = field(default_factory=dict)  # (rule, subject) -> quiet until

    def observe(self, event: Seen) -> list[Alert]:
        due: list[Alert] = []
        if event.purpose == BTG:
            due.append(_single(BREAK_GLASS, event, self.rules.quiet_us))
        if event.outcome == "0" and event.patient is not None:
            if self.rules.hours.off(event.recorded_us):
                due.append(_single(OFF_HOURS, event, self.rules.quiet_us))
            if event.action in ("R", "E"):
                due += self._mass_access(event, event.patient)
        if event.refused:
            due += self._refusal(event)
        return [alert for alert in due if self._due(alert)]

    def remember(self, rule: str, subject: str, tipped_us: int) -> None:
        """An alert already raised (by this or another process): stay quiet after it as if raised here."""
        window = {MASS_ACCESS: self.rules.mass_window_us, REFUSALS: self.rules.refusals_window_us}
        self._quiet[(rule, subject)] = max(self._quiet.get((rule, subject), 0),
                                           tipped_us + window.get(rule, self.rules.quiet_us))

    def expire(self, now_us: int) -> None:
        """Forget subjects with nothing left in their windows (bounds memory by recent activity)."""
        for agent in list(self._patients):
            _drop_before(self._patients[agent], now_us - self.rules.mass_window_us)
            if not self._patients[agent]:
                del self._patients[agent]
        for key in list(self._refusals):
            _drop_before(self._refusals[key], now_us - self.rules.refusals_window_us)
            if not self._refusals[key]:
                del self._refusals[key]
        self._quiet = {key: until for key, until in self._quiet.items() if until > now_us}

    def _due(self, alert: Alert) -> bool:
        key = (alert.rule, alert.subject)
        if alert.last_us < self._quiet.get(key, 0):
            return False
        self._quiet[key] = alert.last_us + alert.window_us
        return True

    def _mass_access(self, event: Seen, patient: str) -> list[Alert]:
        seen = self._patients.setdefault(event.agent, OrderedDict())
        previous = seen.get(patient)
        if previous is None or previous[0] <= event.recorded_us:
            seen[patient] = (event.recorded_us, event.event_id)
            seen.move_to_end(patient)
        _drop_before(seen, event.recorded_us - self.rules.mass_window_us)
        if len(seen) <= self.rules.mass_patients:
            return []
        first_us, first_id = next(iter(seen.values()))
        return [Alert(MASS_ACCESS, event.agent, "agent", len(seen), self.rules.mass_patients,
                      self.rules.mass_window_us, first_id, first_us, event.event_id, event.recorded_us)]

    def _refusal(self, event: Seen) -> list[Alert]:
        subjects = [("address", event.address)] if event.address else []
        if event.agent != ANONYMOUS:
            subjects.insert(0, ("agent", event.agent))
        due = []
        for kind, subject in subjects:
            recent = self._refusals.setdefault((kind, subject), deque())
            recent.append((event.recorded_us, event.event_id))
            _drop_before(recent, event.recorded_us - self.rules.refusals_window_us)
            if len(recent) > self.rules.refusals:
                due.append(Alert(REFUSALS, subject, kind, len(recent), self.rules.refusals,
                                 self.rules.refusals_window_us, recent[0][1], recent[0][0],
                                 event.event_id, event.recorded_us))
        return due


def _drop_before(window: OrderedDict[str, tuple[int, str]] | deque[tuple[int, str]], cutoff_us: int) -> None:
    """Drop the oldest entries recorded at or before ``cutoff_us`` (outside the window)."""
    if isinstance(window, deque):
        while window and window[0][0] <= cutoff_us:
            window.popleft()
        return
    while window and next(iter(window.values()))[0] <= cutoff_us:
        window.popitem(last=False)


def evaluate(windows: Windows, events: list[Seen]) -> list[Alert]:
    """The alerts due for ``events`` (in chain order), given what ``windows`` has seen before."""
    return [alert for event in events for alert in windows.observe(event)]
