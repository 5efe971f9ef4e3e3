"""What each scope form lets a request do (ehr/store/policy.py): pure decisions, no database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehr.context import AccessContext
from ehr.errors import EhrError
from ehr.store import policy
from smart_auth.roles import ROLES, role_permissions
from smart_auth.scopes import Letter, Permissions


def ctx(scopes: str, *, patient: str | None = None, role: str | None = None) -> AccessContext:
    return AccessContext(
        "actor", "Actor", Permissions.parse(scopes), patient=patient,
        role=role_permissions(role) if role is not None else None,
    )


def allowed(context: AccessContext, res_type: str, letter: Letter) -> policy.Access | None:
    try:
        return policy.access(context, res_type, letter)
    except EhrError:
        return None


@pytest.mark.parametrize(
    ("letter", "scope", "ok"),
    [
        ("r", "system/Observation.r", True),
        ("s", "system/Observation.r", False),   # r without s does not allow search (MS8 reading)
        ("s", "system/Observation.s", True),
        ("r", "system/Observation.s", False),
        ("c", "system/Observation.c", True),
        ("u", "system/Observation.c", False),
        ("u", "system/Observation.u", True),
        ("d", "system/Observation.u", False),
        ("d", "system/Observation.d", True),
        ("r", "system/Observation.read", True),
        ("s", "system/Observation.read", True),
        ("c", "system/Observation.read", False),
        ("c", "system/Observation.write", True),
        ("r", "system/Observation.write", False),
        ("r", "system/Patient.rs", False),
    ],
)
def test_scope03_letters_map_to_interactions(letter: Letter, scope: str, ok: bool) -> None:
    assert (allowed(ctx(scope), "Observation", letter) is not None) is ok


def test_scope05_patient_scopes_need_a_launch_patient_and_confine_to_it() -> None:
    assert allowed(ctx("patient/Observation.rs"), "Observation", "r") is None
    access = allowed(ctx("patient/Observation.rs", patient="p1"), "Observation", "r")
    assert access == policy.Access(patient="p1")
    assert not access.unconfined


def test_user_scopes_need_a_user_and_stay_within_the_role() -> None:
    assert allowed(ctx("user/*.cruds"), "Observation", "r") is None          # no signed-in user
    assert allowed(ctx("user/*.cruds", role="clinician"), "Observation", "d") == policy.UNCONFINED
    assert allowed(ctx("user/*.cruds", role="nurse"), "Observation", "d") is None
    assert allowed(ctx("user/*.cruds", role="billing"), "Observation", "r") is None
    assert allowed(ctx("user/*.cruds", role="billing"), "Coverage", "u") is not None
    assert allowed(ctx("user/*.cruds", role="admin"), "Patient", "r") is None


def test_patient_scopes_stay_within_the_role_of_a_person() -> None:
    billing = ctx("patient/*.rs", patient="p1", role="billing")
    assert allowed(billing, "Patient", "r") == policy.Access(patient="p1")
    assert allowed(billing, "Observation", "r") is None
    own = ctx("patient/*.cruds user/*.cruds", patient="p1", role="patient")
    assert allowed(own, "Observation", "r") == policy.Access(patient="p1")
    assert allowed(own, "Observation", "c") is None      # a patient's role reads only
    assert allowed(ctx("user/*.rs", role="patient"), "Observation", "r") is None  # never user/ scopes
    assert allowed(ctx("patient/*.rs", patient="p1"), "Observation", "r") is not None  # no person: the grant decides


def test_a_roles_wildcard_does_not_reach_the_audit_log() -> None:
    assert allowed(ctx("user/*.rs", role="clinician"), "AuditEvent", "r") is None
    assert allowed(ctx("user/AuditEvent.rs", role="clinician"), "AuditEvent", "r") is None
    assert allowed(ctx("user/AuditEvent.rs", role="auditor"), "AuditEvent", "s") is not None


def test_scope04_granular_scopes_filter_reads_and_never_write() -> None:
    scopes = "patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs"
    access = allowed(ctx(scopes, patient="p1"), "Observation", "s")
    assert access == policy.Access("p1", ("category=laboratory", "category=vital-signs"))
    assert allowed(ctx("system/Observation.cruds?category=laboratory"), "Observation", "c") is None
    # an unconditional grant beside a granular one wins
    both = ctx("system/Observation.rs system/Observation.rs?category=laboratory")
    assert allowed(both, "Observation", "r") == policy.UNCONFINED


def test_unconfined_grants_decide_over_patient_grants() -> None:
    mixed = ctx("user/Observation.rs patient/Observation.rs", patient="p1", role="clinician")
    assert allowed(mixed, "Observation", "r") == policy.UNCONFINED


def test_require_refuses_confined_access() -> None:
    with pytest.raises(EhrError):
        policy.require(ctx("patient/Observation.cruds", patient="p1"), "Observation", "c")
    policy.require(ctx("system/Observation.c"), "Observation", "c")


def test_view() -> None:
    assert policy.view(ctx("system/*.rs"), "r") == policy.View(None, None)
    seen = policy.view(ctx("patient/Observation.rs patient/Patient.r", patient="p1"), "r")
    assert seen == policy.View(frozenset({"Observation", "Patient"}), "p1")
    assert policy.view(ctx("system/Observation.rs?category=x"), "r").types == frozenset()


LETTERS: list[Letter] = ["c", "r", "u", "d", "s"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["patient", "user", "system"]),
            st.sampled_from(["*", "Patient", "Observation", "AuditEvent"]),
            st.sets(st.sampled_from("cruds"), min_size=1),
        ),
        max_size=4,
    ),
    st.sampled_from(["Patient", "Observation", "AuditEvent", "Condition"]),
    st.sampled_from(LETTERS),
    st.none() | st.sampled_from(sorted(ROLES)),
    st.none() | st.just("p1"),
)
def test_deny_by_default_property(
    grants: list[tuple[str, str, set[str]]], res_type: str, letter: Letter, role: str | None, patient: str | None
) -> None:
    """Access is granted only when some grant names the type (or *) and the letter, and its context
    can be honoured; patient/ access is always confined to the launch patient."""
    scopes = " ".join(f"{c}/{t}.{''.join(x for x in 'cruds' if x in ls)}" for c, t, ls in grants)
    context = ctx(scopes, patient=patient, role=role)
    found = allowed(context, res_type, letter)
    naming = [(c, t, ls) for c, t, ls in grants if t in ("*", res_type) and letter in ls]
    if found is None:
        return
    assert naming
    if found.patient is not None:
        assert found.patient == patient
        assert not any(c == "system" for c, _, _ in naming)
    if res_type == "AuditEvent" and found.unconfined:  # the audit review needs unconfined access
        assert any(c == "system" for c, _, _ in naming) or role == "auditor" and any(
            t == "AuditEvent" for _, t, _ in naming
        )
    if role is not None and found.patient is not None:  # a person's patient/ grants stay within the role
        assert role in ("clinician", "nurse", "billing", "auditor", "patient")
