"""The review rules (ehr/audit/alerts.py), pure: thresholds exactly at N and N+1, windows, one alert
per rule and subject per window, off-hours in a time zone, and no ePHI in what an alert carries."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr.audit.alerts import (
    BREAK_GLASS,
    MASS_ACCESS,
    OFF_HOURS,
    REFUSALS,
    Alert,
    Hours,
    Rules,
    Seen,
    Windows,
    evaluate,
    is_refusal,
)

MINUTE = 60_000_000
T0 = int(datetime(2026, 1, 5, 10, 0, tzinfo=UTC).timestamp()) * 1_000_000  # a Monday, 10:00 UTC
DAY = Hours.parse("07:00-19:00", "UTC")
_ids = count(1)


def ev(at: int, *, agent: str = "client-1", patient: str | None = "p1", outcome: str = "0", action: str = "R",
       purpose: str | None = None, address: str | None = None, refused: bool = False) -> Seen:
    n = next(_ids)
    return Seen(n, f"event-{n}", at, action, "read", outcome, agent, patient, purpose, address, refused)


def rules(**changes: object) -> Rules:
    return Rules(hours=DAY, **changes)  # type: ignore[arg-type]


def run(windows: Windows, events: list[Seen]) -> list[Alert]:
    return evaluate(windows, events)


# -- mass access ------------------------------------------------------------------------------------


def test_mass_access_fires_above_the_threshold_not_at_it() -> None:
    windows = Windows(rules())
    at_threshold = [ev(T0 + n * 1000, patient=f"p{n}") for n in range(50)]
    assert run(windows, at_threshold) == []
    tip = ev(T0 + 50_000, patient="p50")
    [alert] = run(windows, [tip])
    assert (alert.rule, alert.subject, alert.subject_type) == (MASS_ACCESS, "client-1", "agent")
    assert (alert.count, alert.threshold, alert.window_us) == (51, 50, 10 * MINUTE)
    assert (alert.first_event, alert.first_us) == (at_threshold[0].event_id, T0)
    assert (alert.last_event, alert.last_us) == (tip.event_id, tip.recorded_us)


def test_one_patient_read_thousands_of_times_never_fires() -> None:
    windows = Windows(rules())
    assert run(windows, [ev(T0 + n * 100) for n in range(20_000)]) == []


def test_only_successful_reads_and_searches_of_a_patient_count() -> None:
    windows = Windows(rules(mass_patients=2))
    ignored = [ev(T0, patient="a", outcome="4"), ev(T0 + 1, patient="b", action="U"), ev(T0 + 2, patient=None)]
    counted = [ev(T0 + 3, patient="c", action="E"), ev(T0 + 4, patient="d")]
    assert run(windows, ignored + counted) == []
    assert [a.count for a in run(windows, [ev(T0 + 5, patient="e")])] == [3]


def test_mass_access_window_is_half_open() -> None:
    """(t - T, t]: an event exactly T before the newest one is outside its window."""
    early = [ev(T0, patient="p0")] + [ev(T0 + n, patient=f"p{n}") for n in range(1, 50)]
    exactly_t_later = ev(T0 + 10 * MINUTE, patient="p50")
    assert run(Windows(rules()), [*early, exactly_t_later]) == []
    just_inside = ev(T0 + 10 * MINUTE - 1, patient="p50")
    assert len(run(Windows(rules()), [*early, just_inside])) == 1


def test_actors_are_counted_apart() -> None:
    windows = Windows(rules(mass_patients=4))
    events = [ev(T0 + n, agent=f"client-{n % 2}", patient=f"p{n}") for n in range(8)]
    assert run(windows, events) == []  # 4 distinct patients each: the first alert comes at the next
    assert [a.subject for a in run(windows, [ev(T0 + 9, agent="client-1", patient="p99")])] == ["client-1"]


def test_one_alert_per_window_then_again_after_it() -> None:
    windows = Windows(rules(mass_patients=2))
    first = run(windows, [ev(T0 + n, patient=f"p{n}") for n in range(10)])
    assert [a.count for a in first] == [3]
    assert run(windows, [ev(T0 + 10 * MINUTE - 1, patient=f"q{n}") for n in range(5)]) == []
    again = run(windows, [ev(T0 + 10 * MINUTE + 2, patient="r")])
    assert [a.rule for a in again] == [MASS_ACCESS]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 6)), min_size=1, max_size=60))
def test_first_mass_alert_matches_a_brute_force_count(steps: list[tuple[int, int]]) -> None:
    """The first alert comes at the first event whose window (t - T, t] holds more than N patients."""
    window, limit = 100, 3
    times, events, at = [], [], T0
    for gap, patient in steps:
        at += gap
        times.append(at)
        events.append(ev(at, patient=f"p{patient}"))
    expected = next((e.event_id for e in events
                     if len({x.patient for x in events[: events.index(e) + 1]
                             if e.recorded_us - window < x.recorded_us}) > limit), None)
    alerts = run(Windows(rules(mass_patients=limit, mass_window_us=window)), events)
    assert (alerts[0].last_event if alerts else None) == expected


# -- off-hours --------------------------------------------------------------------------------------


def _local(zone: str, hour: int, minute: int, second: int = 0, micro: int = 0) -> int:
    moment = datetime(2026, 7, 6, hour, minute, second, micro, tzinfo=ZoneInfo(zone))
    return int(moment.timestamp()) * 1_000_000 + micro


@pytest.mark.parametrize(
    ("hour", "minute", "second", "micro", "off"),
    [(6, 59, 59, 999_999, True), (7, 0, 0, 0, False), (18, 59, 59, 999_999, False), (19, 0, 0, 0, True),
     (0, 0, 0, 0, True), (12, 0, 0, 0, False)],
)
def test_off_hours_boundaries_in_the_configured_zone(hour: int, minute: int, second: int, micro: int,
                                                      off: bool) -> None:
    windows = Windows(Rules(hours=Hours.parse("07:00-19:00", "America/New_York")))
    alerts = run(windows, [ev(_local("America/New_York", hour, minute, second, micro))])
    assert [a.rule for a in alerts] == ([OFF_HOURS] if off else [])


def test_off_hours_needs_a_successful_patient_access() -> None:
    windows = Windows(rules())
    night = T0 - 8 * 60 * MINUTE  # 02:00 UTC
    assert run(windows, [ev(night, outcome="4"), ev(night, patient=None), ev(night, outcome="8")]) == []
    assert [a.rule for a in run(windows, [ev(night, action="U")])] == [OFF_HOURS]


def test_off_hours_alerts_once_per_actor_per_quiet_period() -> None:
    windows = Windows(rules(quiet_us=60 * MINUTE))
    night = T0 - 8 * 60 * MINUTE
    assert len(run(windows, [ev(night + n * MINUTE, patient=f"p{n}") for n in range(60)])) == 1
    assert len(run(windows, [ev(night + 60 * MINUTE), ev(night + 61 * MINUTE)])) == 1
    assert len(run(windows, [ev(night, agent="client-2")])) == 1


def test_working_hours_may_wrap_midnight_or_cover_the_day() -> None:
    night_shift = Hours.parse("22:00-06:00", "UTC")
    assert not night_shift.off(T0 - 8 * 60 * MINUTE)  # 02:00
    assert night_shift.off(T0)  # 10:00
    always = Hours.parse("00:00-00:00", "UTC")
    assert not always.off(T0) and not always.off(T0 - 8 * 60 * MINUTE)


@pytest.mark.parametrize(("spec", "zone"), [("7-19", "UTC"), ("07:00", "UTC"), ("07:00-19:00", "Mars/Olympus")])
def test_malformed_hours_are_refused(spec: str, zone: str) -> None:
    with pytest.raises(ValueError, match="07:00-19:00"):
        Hours.parse(spec, zone)


# -- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "subtype", "desc", "refusal"),
    [("4", "authenticate", None, True), ("4", "read", "403 the granted scopes do not allow 'r'", True),
     ("4", "search-type", "401 authentication required", True), ("4", "read", "404 Patient not found", False),
     ("4", "read", "4031 odd", False), ("0", "authenticate", None, False), ("8", "read", "500 internal", False),
     ("4", "read", None, False)],
)
def test_what_counts_as_a_refusal(outcome: str, subtype: str, desc: str | None, refusal: bool) -> None:
    assert is_refusal(outcome, subtype, desc) is refusal


def _refused(at: int, agent: str = "client-1", address: str | None = "10.0.0.7") -> Seen:
    return ev(at, agent=agent, patient=None, outcome="4", address=address, refused=True)


def test_refusals_fire_above_the_threshold_for_the_actor_and_the_address() -> None:
    windows = Windows(rules())
    assert run(windows, [_refused(T0 + n) for n in range(5)]) == []
    alerts = run(windows, [_refused(T0 + 5)])
    assert {(a.rule, a.subject_type, a.subject, a.count) for a in alerts} == {
        (REFUSALS, "agent", "client-1", 6), (REFUSALS, "address", "10.0.0.7", 6)}


def test_anonymous_refusals_count_by_address_only() -> None:
    windows = Windows(rules())
    spread = [_refused(T0 + n, agent="anonymous", address=f"10.0.0.{n}") for n in range(6)]
    assert run(windows, spread) == []
    alerts = run(windows, [_refused(T0 + 10 + n, agent="anonymous", address="10.9.9.9") for n in range(6)])
    assert [(a.subject_type, a.subject) for a in alerts] == [("address", "10.9.9.9")]


def test_refusals_outside_the_window_do_not_add_up() -> None:
    windows = Windows(rules())
    spaced = [_refused(T0 + n * MINUTE) for n in range(12)]  # 5 per 5 minutes at most
    assert run(windows, spaced) == []


def test_other_failures_are_not_refusals() -> None:
    windows = Windows(rules())
    assert run(windows, [ev(T0 + n, outcome="4", patient=None, address="10.0.0.7") for n in range(50)]) == []


# -- break-glass ------------------------------------------------------------------------------------


def test_break_glass_fires_at_once_then_stays_quiet_for_that_actor() -> None:
    windows = Windows(rules(quiet_us=60 * MINUTE))
    [alert] = run(windows, [ev(T0, purpose="BTG", outcome="4", patient=None)])
    assert (alert.rule, alert.subject, alert.count) == (BREAK_GLASS, "client-1", 1)
    assert run(windows, [ev(T0 + 59 * MINUTE, purpose="BTG")]) == []
    assert [a.rule for a in run(windows, [ev(T0 + 60 * MINUTE, purpose="BTG")])] == [BREAK_GLASS]
    assert run(windows, [ev(T0, purpose="TREAT")]) == []


def test_a_remembered_alert_keeps_the_rule_quiet() -> None:
    """An alert stored by another process (or before a restart) counts as raised here."""
    windows = Windows(rules())
    windows.remember(BREAK_GLASS, "client-1", T0)
    assert run(windows, [ev(T0 + MINUTE, purpose="BTG")]) == []


def test_expiring_idle_subjects_changes_no_outcome() -> None:
    events = [ev(T0 + n * MINUTE, patient=f"p{n % 70}") for n in range(200)]
    kept, pruned = Windows(rules(mass_patients=5)), Windows(rules(mass_patients=5))
    expected = [(a.rule, a.last_event) for a in run(kept, events)]
    got = []
    for event in events:
        got += [(a.rule, a.last_event) for a in run(pruned, [event])]
        pruned.expire(event.recorded_us)
    assert got == expected


# -- what an alert says -----------------------------------------------------------------------------


def test_an_alert_carries_ids_counts_and_times_only() -> None:
    windows = Windows(rules(mass_patients=1))
    [alert] = run(windows, [ev(T0, patient="Patient-Zyxwvut"), ev(T0 + 1000, patient="pat-secret-2")])
    detail = alert.detail()
    assert set(detail) == {"rule", "subject", "subject_type", "count", "threshold", "window_seconds",
                           "first_event", "first_recorded", "last_event", "last_recorded"}
    assert "Zyxwvut" not in str(detail) and "pat-secret" not in str(detail)
    assert detail["first_recorded"] == "2026-01-05T10:00:00.000000Z"
    assert detail["window_seconds"] == 600


def test_alert_ids_are_the_same_wherever_they_are_computed() -> None:
    events = [ev(T0 + n, patient=f"p{n}") for n in range(60)]
    once = run(Windows(rules()), events)
    twice = run(Windows(rules()), events)
    assert [a.id for a in once] == [a.id for a in twice] and len(once) == 1
