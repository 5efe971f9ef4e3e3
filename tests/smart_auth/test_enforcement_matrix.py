"""Every interaction x every scope form x a resource inside / outside the launch patient's
compartment x a bound / unbound token, with the expected allow or deny (SCOPE-03/04/05, MTLS-03);
both database engines.

Data: patients p1 (the launch patient) and p2; observations o1 (p1, laboratory), o2 (p1,
vital-signs), o3 (p2, laboratory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ehr.api.services import Services
from ehr.pki import DevPki, certificate_thumbprint
from tests.smart_auth.oauth import add_observation, add_patient, add_user, bearer, https, mint, public_app

LAB = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}


@dataclass(frozen=True)
class Form:
    scopes: str
    patient: str | None            # launch patient
    user: bool                     # a clinician signed in
    sees: Callable[[str], bool]    # which of p1 p2 o1 o2 o3 it may read
    writes: Callable[[str], bool]  # which it may write (create/update/delete) as Observation/Patient


def _all(_: str) -> bool:
    return True


def _none(_: str) -> bool:
    return False


FORMS = {
    "system/*.cruds": Form("system/*.cruds", None, False, _all, _all),
    "user/*.cruds": Form("user/*.cruds", None, True, _all, _all),
    "patient/*.cruds": Form("patient/*.cruds", "p1", False, lambda r: r in ("p1", "o1", "o2"),
                            lambda r: r in ("o1", "o2")),
    "patient/*.read (v1)": Form("patient/*.read", "p1", False, lambda r: r in ("p1", "o1", "o2"), _none),
    "patient/Observation.rs": Form("patient/Observation.rs", "p1", False, lambda r: r in ("o1", "o2"), _none),
    "granular laboratory": Form(LAB, "p1", False, lambda r: r == "o1", _none),
}
TYPES = {"p1": "Patient", "p2": "Patient", "o1": "Observation", "o2": "Observation", "o3": "Observation"}


@pytest.fixture
async def world(services: Services) -> Services:
    for pid in ("p1", "p2"):
        await add_patient(services, pid)
    await add_observation(services, "o1", "p1", "laboratory")
    await add_observation(services, "o2", "p1", "vital-signs")
    await add_observation(services, "o3", "p2", "laboratory")
    return services


async def token_for(services: Services, form: Form, cnf: str | None = None) -> str:
    app = await public_app(services)
    user = await add_user(services) if form.user else None
    if form.scopes.startswith("system/"):
        from tests.smart_auth.oauth import backend

        service = await backend(services, form.scopes)
        return await mint(services, service.client, None, form.scopes, cnf=cnf)
    return await mint(services, app, user, form.scopes, patient=form.patient, cnf=cnf)


def readable(form: Form, res_type: str) -> bool:
    """Whether the form grants r on the type at all (403 when not; 404 when granted but hidden)."""
    return any(form.sees(r) for r, t in TYPES.items() if t == res_type) or form.scopes.startswith(("system", "user"))


@pytest.mark.parametrize("name", FORMS)
@pytest.mark.parametrize("target", sorted(TYPES))
async def test_read_vread_history(world: Services, name: str, target: str) -> None:
    form = FORMS[name]
    token = await token_for(world, form)
    res_type = TYPES[target]
    expected = 200 if form.sees(target) else 404 if readable(form, res_type) else 403
    async with await https(world) as http:
        for path in (f"{res_type}/{target}", f"{res_type}/{target}/_history/1", f"{res_type}/{target}/_history"):
            response = await http.get(f"fhir/{path}", headers=bearer(token))
            assert response.status_code == expected, (path, response.text)


@pytest.mark.parametrize("name", FORMS)
async def test_search_include_history_everything(world: Services, name: str) -> None:
    form = FORMS[name]
    token = await token_for(world, form)
    async with await https(world) as http:

        async def ids(path: str) -> set[str] | int:
            response = await http.get(f"fhir/{path}", headers=bearer(token))
            if response.status_code != 200:
                return response.status_code
            body = response.json()
            entries = body.get("entry", [])
            return {e["resource"]["id"] for e in entries if e["resource"]["resourceType"] != "OperationOutcome"}

        visible_obs = {r for r in ("o1", "o2", "o3") if form.sees(r)}
        assert await ids("Observation") == visible_obs
        # includes are confined before paging: never another patient's Patient
        included = await ids("Observation?_include=Observation:subject")
        if form.sees("p1"):
            assert included == visible_obs | {p for p in ("p1", "p2") if form.sees(p)} & {"p1", "p2"}
        else:
            assert included == visible_obs
        history = await ids("Observation/_history")
        assert history == visible_obs or history == 403
        everything = await ids("Patient/p2/$everything")
        if form.sees("p2"):
            assert isinstance(everything, set) and "o3" in everything
        else:
            assert everything in (403, 404) or everything == set()
        compartment = await ids("Patient/p1/Observation")
        assert compartment == {r for r in ("o1", "o2") if form.sees(r)}


@pytest.mark.parametrize("name", FORMS)
@pytest.mark.parametrize("target", ["o1", "o3"])
async def test_writes(world: Services, name: str, target: str) -> None:
    form = FORMS[name]
    token = await token_for(world, form)
    subject = "p1" if target == "o1" else "p2"
    body = {**OBS, "id": target, "subject": {"reference": f"Patient/{subject}"}}
    allowed = form.writes(target)
    hidden = 404 if form.scopes.startswith("patient/*.cruds") else 403
    async with await https(world) as http:
        created = await http.post("fhir/Observation", json={**OBS, "subject": {"reference": f"Patient/{subject}"}},
                                  headers=bearer(token))
        assert created.status_code == (201 if allowed else 403), created.text
        updated = await http.put(f"fhir/Observation/{target}", json=body, headers=bearer(token))
        # the body names p2 for o3: outside the compartment, whatever is stored
        assert updated.status_code == (200 if allowed else 403), updated.text
        patched = await http.patch(
            f"fhir/Observation/{target}", headers={**bearer(token), "Content-Type": "application/json-patch+json"},
            content=b'[{"op": "replace", "path": "/status", "value": "amended"}]',
        )
        assert patched.status_code == (200 if allowed else hidden), patched.text
        if form.scopes.startswith("patient/*.cruds") and target == "o1":
            # a confined write may not move the resource out of the compartment
            moved = await http.put(f"fhir/Observation/{target}", headers=bearer(token),
                                   json={**body, "subject": {"reference": "Patient/p2"}})
            assert moved.status_code == 403
        deleted = await http.delete(f"fhir/Observation/{target}", headers=bearer(token))
        assert deleted.status_code == (204 if allowed else hidden), deleted.text


@pytest.mark.parametrize("name", FORMS)
@pytest.mark.parametrize("presented", ["same", "other", "none"])
async def test_bound_tokens(world: Services, pki: DevPki, name: str, presented: str) -> None:
    """MTLS-03: a bound token works only with its certificate, whatever its scopes."""
    from tests.audit.test_review import issue_pem

    pem = pki.client_cert.read_text()
    form = FORMS[name]
    token = await token_for(world, form, cnf=certificate_thumbprint(pem))
    cert = {"same": pem, "other": issue_pem(pki, "someone-else"), "none": None}[presented]
    async with await https(world, cert) as http:
        response = await http.get("fhir/Observation", headers=bearer(token))
    assert response.status_code == (200 if presented == "same" else 401)


async def test_unbound_token_works_with_or_without_a_certificate(world: Services, pki: DevPki) -> None:
    token = await token_for(world, FORMS["patient/*.cruds"])
    for pem in (pki.client_cert.read_text(), None):
        async with await https(world, pem) as http:
            assert (await http.get("fhir/Patient/p1", headers=bearer(token))).status_code == 200


def test_forms_cover_every_scope_shape() -> None:
    shapes = {f.scopes.split("/")[0] for f in FORMS.values()}
    assert shapes == {"system", "user", "patient"}
    assert any("?" in f.scopes for f in FORMS.values()) and any(f.scopes.endswith(".read") for f in FORMS.values())




@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        ("billing", "Patient/p1", 200),
        ("billing", "Observation/o1", 403),
        ("nurse", "Observation/o1", 200),
        ("clinician", "AuditEvent", 403),   # a role's * never reaches the audit log
        ("auditor", "AuditEvent", 200),
        ("auditor", "Observation/o1", 403),
        ("admin", "Patient/p1", 403),
    ],
)
async def test_user_scopes_never_exceed_the_role(world: Services, role: str, path: str, status: int) -> None:
    app = await public_app(world)
    user = await add_user(world, role=role, username=f"{role}-user")
    scopes = "user/*.cruds user/AuditEvent.rs"
    token = await mint(world, app, user, scopes)
    async with await https(world) as http:
        response = await http.get(f"fhir/{path}", headers=bearer(token))
    assert response.status_code == status, response.text


async def test_nurse_may_not_delete(world: Services) -> None:
    app = await public_app(world)
    token = await mint(world, app, await add_user(world, role="nurse"), "user/*.cruds")
    async with await https(world) as http:
        assert (await http.delete("fhir/Observation/o1", headers=bearer(token))).status_code == 403


def _transaction(*entries: dict[str, object]) -> dict[str, object]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _obs_entry(method: str, url: str, subject: str, oid: str | None = None) -> dict[str, object]:
    resource = {**OBS, "subject": {"reference": subject}, **({"id": oid} if oid else {})}
    return {"resource": resource, "request": {"method": method, "url": url}}


@pytest.mark.parametrize("name", ["patient/*.cruds", "system/*.cruds"])
async def test_transactions_and_conditional_writes_are_confined(world: Services, name: str) -> None:
    """Bundles, conditional create/update/delete and conditional references under patient/ scopes:
    every entry stays in the compartment, and criteria never match another patient's resources."""
    confined = name.startswith("patient")
    token = await token_for(world, FORMS[name])
    headers = bearer(token)
    async with await https(world) as http:
        own = _transaction(_obs_entry("POST", "Observation", "Patient/p1"),
                           _obs_entry("PUT", "Observation/o1", "Patient/p1", "o1"))
        assert (await http.post("fhir", json=own, headers=headers)).status_code == 200
        others = _transaction(_obs_entry("PUT", "Observation/o3", "Patient/p2", "o3"))
        assert (await http.post("fhir", json=others, headers=headers)).status_code == (403 if confined else 200)
        if confined:  # another patient's resource, even rewritten to name the launch patient
            taken = _transaction(_obs_entry("PUT", "Observation/o3", "Patient/p1", "o3"))
            assert (await http.post("fhir", json=taken, headers=headers)).status_code == 404
        moved = _transaction(_obs_entry("PUT", "Observation/o1", "Patient/p2", "o1"))
        assert (await http.post("fhir", json=moved, headers=headers)).status_code == (403 if confined else 200)
        referenced = _transaction(_obs_entry("POST", "Observation", "Patient?_id=p2"))
        assert (await http.post("fhir", json=referenced, headers=headers)).status_code == (412 if confined else 200)
        # If-None-Exist cannot see another patient's resource: under patient/ it creates a new one
        body = {**OBS, "subject": {"reference": "Patient/p1"}}
        created = await http.post("fhir/Observation", json=body, headers={**headers, "If-None-Exist": "_id=o3"})
        assert created.status_code == (201 if confined else 200)
        deleted = await http.delete("fhir/Observation?_id=o3", headers=headers)
        assert deleted.status_code == 204
    system = await token_for(world, FORMS["system/*.cruds"])
    async with await https(world) as http:
        remaining = await http.get("fhir/Observation/o3", headers=bearer(system))
    assert remaining.status_code == (200 if confined else 410)
