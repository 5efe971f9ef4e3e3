"""The authorization endpoint as a browser drives it: sign in, pick a patient, consent, the code at
the redirect URI; the EHR launcher; sign-out. Assertions are on what the browser and the app receive
(pages, redirects, cookies) and on the grant and AuditEvents the flow leaves behind."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ehr.api.services import Services
from ehr.context import operator_context, system_context
from ehr.store.clients import Client, Registration
from smart_auth.authorize import authorize
from smart_auth.grants import AuthGrant
from smart_auth.launcher import launcher, logout
from smart_auth.server import AuthServer
from smart_auth.users import User
from tests.audit.helpers import events

PASSWORD = "correct horse battery staple"
REDIRECT = "https://app.example/cb"
LAUNCH_URI = "https://app.example/launch"
ISSUER = "https://ehr.test/fhir"
SCOPES = "patient/*.rs user/*.rs openid fhirUser launch launch/patient offline_access"
VERIFIER = "v" * 20 + "erifier-with-enough-characters-for-rfc-7636"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

Handler = Callable[[Request, AuthServer], Awaitable[Response]]


# -- reading pages -------------------------------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    hidden: list[tuple[str, str]] = field(default_factory=list)
    checkboxes: list[str] = field(default_factory=list)
    radios: list[str] = field(default_factory=list)
    options: dict[str, list[str]] = field(default_factory=dict)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get")))
        elif tag == "input" and self.forms:
            kind, name, value = a.get("type"), a.get("name", ""), a.get("value", "")
            if kind == "hidden":
                self.forms[-1].hidden.append((name, value))
            elif kind == "checkbox" and "checked" in a:
                self.forms[-1].checkboxes.append(value)
            elif kind == "radio":
                self.forms[-1].radios.append(value)
        elif tag == "select":
            self._select = a.get("name", "")
        elif tag == "option" and self._select is not None:
            self.forms[-1].options.setdefault(self._select, []).append(a.get("value", ""))


def forms(response: httpx.Response) -> list[Form]:
    parser = _Forms()
    parser.feed(response.text)
    return parser.forms


def post_form(response: httpx.Response) -> Form:
    return next(f for f in forms(response) if f.method == "post")


def location(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 303, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)


# -- the parts -------------------------------------------------------------------------------------


@dataclass
class Env:
    services: Services
    server: AuthServer
    http: httpx.AsyncClient
    client: Client
    user: User
    patient: str

    def params(self, **changes: str | None) -> dict[str, str]:
        params: dict[str, str | None] = {
            "response_type": "code", "client_id": self.client.id, "redirect_uri": REDIRECT, "scope": SCOPES,
            "state": "st-1 /+?", "aud": ISSUER, "code_challenge": create_s256_code_challenge(VERIFIER),
            "code_challenge_method": "S256", **changes,
        }
        return {k: v for k, v in params.items() if v is not None}

    async def start(self, **changes: str | None) -> httpx.Response:
        return await self.http.get("/oauth/authorize", params=self.params(**changes))

    async def submit(self, response: httpx.Response, pairs: list[tuple[str, str]] | None = None,
                     *, ticked: bool = True, form: Form | None = None) -> httpx.Response:
        """Post the page's form: its hidden fields, its ticked boxes, and ``pairs``."""
        form = form or post_form(response)
        body = form.hidden + ([("scope", s) for s in form.checkboxes] if ticked else []) + (pairs or [])
        return await self.http.post(form.action, content=urlencode(body), headers=FORM)

    async def sign_in(self, response: httpx.Response, password: str = PASSWORD,
                      username: str = "alice") -> httpx.Response:
        return await self.submit(response, [("username", username), ("password", password)])

    async def grant_of(self, code: str) -> AuthGrant:
        redeemed = await self.server.grants.redeem_code(code)
        assert redeemed is not None
        return redeemed.grant


def _endpoint(handler: Handler, server: AuthServer) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(request, server)
    return endpoint


async def _register(services: Services, name: str = "app") -> Client:
    client, _ = await services.clients.register(operator_context(), Registration(
        name=name, scopes=SCOPES, auth_method="none", redirect_uris=[REDIRECT], launch_uri=LAUNCH_URI,
    ))
    return client


@pytest.fixture
async def env(services: Services) -> AsyncIterator[Env]:
    server = services.auth
    users = server.users
    client = await _register(services)
    user = await users.add(operator_context(), "alice", "Alice Smith", "clinician", PASSWORD,
                           fhir_user="Practitioner/p-1")
    body = {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["Jane"]}], "birthDate": "1970-01-01"}
    patient = await services.store.create(system_context("test"), "Patient", body)
    await services.store.create(system_context("test"), "Patient", {"resourceType": "Patient",
                                                                     "name": [{"family": "Roe"}]})
    app = Starlette(routes=[
        Route(f"/oauth/{name}", _endpoint(handler, server), methods=["GET", "POST"])
        for name, handler in (("authorize", authorize), ("launcher", launcher), ("logout", logout))
    ])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://ehr.test") as http:
        yield Env(services, server, http, client, user, patient.res_id)


async def _signed_in(env: Env, **changes: str | None) -> httpx.Response:
    """Start an authorization and sign in: the page after the sign-in page."""
    return await env.sign_in(await env.start(**changes))


async def _audit(env: Env, subtype: str) -> list[dict[str, Any]]:
    found = await events(env.services.db, env.services.keys)
    return [e for e in found if e["subtype"][0]["code"] == subtype]


# -- AUTHZ-01/02/03: the request ---------------------------------------------------------------


async def test_authz01_get_and_post_both_start_the_flow(env: Env) -> None:
    by_get = await env.start()
    by_post = await env.http.post("/oauth/authorize", content=urlencode(env.params()), headers=FORM)
    for page in (by_get, by_post):
        assert page.status_code == 200
        assert 'id="sign-in"' in page.text
        assert "form-action 'self' https://app.example;" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
    assert "ehr_csrf" in env.http.cookies
    consent = await env.sign_in(by_post)
    assert 'id="choose"' in consent.text


async def test_authz01_session_and_csrf_cookies_are_locked_down(env: Env) -> None:
    first = await env.start()
    assert first.headers["set-cookie"].lower() == (
        f"ehr_csrf={env.http.cookies['ehr_csrf']}; httponly; path=/oauth; samesite=strict; secure".lower()
    )
    signed = await env.sign_in(first)
    cookie = signed.headers["set-cookie"].lower()
    assert cookie.startswith("ehr_session=") and cookie.endswith("; httponly; path=/oauth; samesite=lax; secure")


@pytest.mark.parametrize("changes", [{"code_challenge_method": "plain"}, {"code_challenge_method": None},
                                     {"code_challenge": None}])
async def test_authz02_plain_or_missing_pkce_refused(env: Env, changes: dict[str, str | None]) -> None:
    answer = location(await env.start(**changes))
    assert answer["error"] == ["invalid_request"] and answer["state"] == ["st-1 /+?"]
    assert "code" not in answer


async def test_authz02_missing_state_refused(env: Env) -> None:
    answer = location(await env.start(state=None))
    assert answer["error"] == ["invalid_request"] and "state" not in answer and "code" not in answer


async def test_authz02_response_type_must_be_code(env: Env) -> None:
    answer = location(await env.start(response_type="token"))
    assert answer["error"] == ["unsupported_response_type"] and answer["state"] == ["st-1 /+?"]


async def test_authz02_malformed_scope_is_invalid_scope(env: Env) -> None:
    for scope in ("patient/Observation.dus", "openid unknown_thing", None):
        answer = location(await env.start(scope=scope))
        assert answer["error"] == (["invalid_request"] if scope is None else ["invalid_scope"])


async def test_authz02_a_repeated_parameter_is_refused(env: Env) -> None:
    query = urlencode(env.params()) + "&scope=user%2F*.cruds"
    answer = location(await env.http.get(f"/oauth/authorize?{query}"))
    assert answer["error"] == ["invalid_request"]


async def test_authz02_wrong_redirect_uri_is_never_followed(env: Env) -> None:
    for uri in ("https://evil.example/cb", REDIRECT + "/", None):
        page = await env.start(redirect_uri=uri)
        assert page.status_code == 400 and "location" not in page.headers
        assert "redirect_uri" in page.text


async def test_authz02_unknown_or_disabled_client_is_not_redirected(env: Env) -> None:
    page = await env.start(client_id="no-such-client")
    assert page.status_code == 400 and "location" not in page.headers
    await env.services.clients.set_disabled(operator_context(), env.client.id, True)
    page = await env.start()
    assert page.status_code == 400 and "location" not in page.headers


async def test_authz03_bad_aud_gets_no_code(env: Env) -> None:
    await _signed_in(env)  # even a signed-in user gets no code
    for aud in ("https://other.example/fhir", ISSUER + "/other", ISSUER + "x", None):
        response = await env.start(aud=aud)
        answer = location(response)
        assert response.headers["location"].startswith(REDIRECT + "?")
        assert answer["error"] == ["invalid_request"] and "code" not in answer
    refused = await _audit(env, "authorize")
    assert refused and all(e["outcome"] == "4" for e in refused)


async def test_authz03_the_base_with_a_final_slash_is_the_base(env: Env) -> None:
    """fhirclient (Python) sends ``aud`` with the base's final slash; it names the same server."""
    await _signed_in(env)
    response = await env.start(aud=ISSUER + "/")
    assert response.status_code == 200 and 'id="choose"' in response.text  # the patient picker: no error


# -- signing in ----------------------------------------------------------------------------------


async def test_login_failure_is_generic_and_audited(env: Env) -> None:
    wrong_password = await env.sign_in(await env.start(), password="not the password at all")
    unknown_user = await env.sign_in(await env.start(), username="mallory")
    for page in (wrong_password, unknown_user):
        assert page.status_code == 200 and 'id="sign-in"' in page.text
        assert "Unknown username or wrong password" in page.text
        assert "ehr_session" not in env.http.cookies
    failed = await _audit(env, "login")
    assert [e["outcome"] for e in failed] == ["4", "4"]
    assert failed[0]["agent"][0]["who"]["identifier"]["value"] == env.user.id
    assert failed[1]["agent"][0]["who"]["identifier"]["value"] == env.client.id  # the app; no user named
    text = json.dumps(failed)
    assert "not the password at all" not in text and PASSWORD not in text and "mallory" not in text
    await env.sign_in(await env.start())
    assert [e["outcome"] for e in await _audit(env, "login")] == ["4", "4", "0"]


async def test_a_disabled_user_is_signed_out(env: Env) -> None:
    await _signed_in(env)
    assert 'id="choose"' in (await env.start()).text
    await env.server.users.set_disabled(operator_context(), env.user.id, True)
    assert 'id="sign-in"' in (await env.start()).text


async def test_csrf_mismatch_refused(env: Env) -> None:
    login = post_form(await env.start())
    tampered = Form(login.action, "post", [(k, "forged" if k == "csrf" else v) for k, v in login.hidden])
    page = await env.submit(await env.start(), [("username", "alice"), ("password", PASSWORD)], form=tampered)
    assert page.status_code == 400 and "ehr_session" not in env.http.cookies
    missing = Form(login.action, "post", [(k, v) for k, v in login.hidden if k != "csrf"])
    page = await env.submit(await env.start(), [("username", "alice"), ("password", PASSWORD)], form=missing)
    assert page.status_code == 400 and "ehr_session" not in env.http.cookies


# -- AUTHZ-04/05/06/07: standalone launch --------------------------------------------------------


async def test_authz04_standalone_flow_with_picker_returns_code_and_unchanged_state(env: Env) -> None:
    picker = await _signed_in(env)
    assert "Doe, Jane (1970-01-01)" in picker.text and "Roe" in picker.text
    search = next(f for f in forms(picker) if f.method == "get")
    found = await env.http.get(search.action, params=[*search.hidden, ("q", "Doe")])
    assert post_form(found).radios == [env.patient]
    consent = await env.submit(found, [("patient", env.patient)])
    assert "Doe, Jane (1970-01-01)" in consent.text and 'id="offline-notice"' in consent.text
    answer = location(await env.submit(consent, [("decision", "approve")]))
    assert answer["state"] == ["st-1 /+?"] and "error" not in answer
    grant = await env.grant_of(answer["code"][0])
    assert grant.patient == env.patient and grant.user_id == env.user.id and grant.client_id == env.client.id
    assert grant.scopes.split() == SCOPES.split()
    assert grant.refresh_expires_us is None  # the token endpoint adds it for offline_access
    [approved] = [e for e in await _audit(env, "authorize") if e["outcome"] == "0"]
    assert approved["agent"][0]["who"]["identifier"]["value"] == env.user.id


async def test_authz07_deselected_scopes_narrow_the_grant(env: Env) -> None:
    consent = await env.submit(await _signed_in(env), [("patient", env.patient)])
    kept = [s for s in post_form(consent).checkboxes if s not in ("offline_access", "user/*.rs")]
    answer = location(await env.submit(consent, [*[("scope", s) for s in kept], ("decision", "approve")],
                                       ticked=False))
    grant = await env.grant_of(answer["code"][0])
    assert grant.scopes.split() == ["patient/*.rs", "openid", "fhirUser", "launch", "launch/patient"]


async def test_authz07_ticking_more_than_offered_grants_nothing_more(env: Env) -> None:
    consent = await env.submit(await _signed_in(env), [("patient", env.patient)])
    answer = location(await env.submit(consent, [("scope", "user/*.cruds"), ("scope", "system/*.cruds"),
                                                 ("decision", "approve")]))
    grant = await env.grant_of(answer["code"][0])
    assert "user/*.cruds" not in grant.scopes and "system/*.cruds" not in grant.scopes


async def test_deny_gives_access_denied(env: Env) -> None:
    consent = await env.submit(await _signed_in(env), [("patient", env.patient)])
    answer = location(await env.submit(consent, [("decision", "deny")]))
    assert answer["error"] == ["access_denied"] and answer["state"] == ["st-1 /+?"] and "code" not in answer
    assert [e["outcome"] for e in await _audit(env, "authorize")] == ["4"]


async def test_a_picked_patient_the_user_cannot_read_is_refused(env: Env) -> None:
    consent = await env.submit(await _signed_in(env), [("patient", env.patient)])
    form = post_form(consent)
    form.hidden = [(k, "not-a-patient" if k == "patient" else v) for k, v in form.hidden]
    answer = location(await env.submit(consent, [("decision", "approve")], form=form))
    assert answer["error"] == ["invalid_request"] and "code" not in answer


async def test_authz06_patient_scopes_need_a_patient_in_context(env: Env) -> None:
    consent = await _signed_in(env, scope="patient/*.rs user/*.rs openid")
    assert post_form(consent).checkboxes == ["user/*.rs"]
    answer = location(await env.submit(consent, [("decision", "approve")]))
    grant = await env.grant_of(answer["code"][0])
    assert grant.scopes == "user/*.rs openid" and grant.patient is None
    answer = location(await env.start(scope="patient/*.rs"))
    assert answer["error"] == ["invalid_scope"]


async def test_authz05_a_patient_user_gets_their_own_record_without_a_picker(env: Env) -> None:
    await env.server.users.add(operator_context(), "jane", "Jane Doe", "clinician", PASSWORD,
                               fhir_user=f"Patient/{env.patient}")
    consent = await env.sign_in(await env.start(scope="patient/*.rs launch/patient"), username="jane")
    assert 'id="approve"' in consent.text and "your record" in consent.text
    grant = await env.grant_of(location(await env.submit(consent, [("decision", "approve")]))["code"][0])
    assert grant.patient == env.patient


# -- AUTHZ-05: EHR launch ------------------------------------------------------------------------


async def _launch(env: Env, client: Client) -> str:
    """Launch ``client`` from the EHR launcher for the patient; the app's launch URI receives it."""
    page = await env.http.get("/oauth/launcher")
    if 'id="sign-in"' in page.text:
        page = await env.sign_in(page)
    form = post_form(page)
    assert env.patient in form.options["patient"] and client.id in form.options["client_id"]
    sent = await env.submit(page, [("client_id", client.id), ("patient", env.patient)])
    assert sent.status_code == 303 and sent.headers["location"].startswith(LAUNCH_URI + "?")
    answer = location(sent)
    assert answer["iss"] == [ISSUER]
    return answer["launch"][0]


async def test_authz05_ehr_launch_skips_the_picker_and_binds_the_patient(env: Env) -> None:
    handle = await _launch(env, env.client)
    consent = await env.start(launch=handle, scope="launch patient/*.rs openid fhirUser")
    assert 'id="approve"' in consent.text and 'id="choose"' not in consent.text
    answer = location(await env.submit(consent, [("decision", "approve")]))
    grant = await env.grant_of(answer["code"][0])
    assert grant.patient == env.patient and grant.scopes == "patient/*.rs launch openid fhirUser"
    [launched] = await _audit(env, "launch")
    assert launched["outcome"] == "0"
    again = await env.start(launch=handle, scope="launch patient/*.rs")
    assert location(await env.submit(again, [("decision", "approve")]))["error"] == ["invalid_request"]


async def test_authz05_a_launch_of_another_client_is_refused(env: Env) -> None:
    other = await _register(env.services, "other app")
    handle = await _launch(env, other)
    consent = await env.start(launch=handle, scope="launch patient/*.rs")
    answer = location(await env.submit(consent, [("decision", "approve")]))
    assert answer["error"] == ["invalid_request"] and "code" not in answer


async def test_authz05_the_launch_parameter_needs_the_launch_scope(env: Env) -> None:
    answer = location(await env.start(launch="anything", scope="patient/*.rs"))
    assert answer["error"] == ["invalid_scope"]


async def test_the_launcher_refuses_a_patient_the_user_cannot_read(env: Env) -> None:
    page = await env.sign_in(await env.http.get("/oauth/launcher"))
    sent = await env.submit(page, [("client_id", env.client.id), ("patient", "not-a-patient")])
    assert sent.status_code == 400 and "location" not in sent.headers


# -- signing out ---------------------------------------------------------------------------------


async def test_logout_ends_the_session(env: Env) -> None:
    await _signed_in(env)
    confirm = await env.http.get("/oauth/logout")
    done = await env.submit(confirm)
    assert done.status_code == 200 and "Signed out" in done.text
    assert 'id="sign-in"' in (await env.start()).text
    [event] = await _audit(env, "logout")
    assert event["agent"][0]["who"]["identifier"]["value"] == env.user.id


async def test_logout_needs_the_csrf_value(env: Env) -> None:
    await _signed_in(env)
    refused = await env.http.post("/oauth/logout", content="csrf=forged", headers=FORM)
    assert refused.status_code == 400
    assert 'id="choose"' in (await env.start()).text


async def test_authz02_a_granular_scope_the_server_cannot_evaluate_is_invalid_scope(env: Env) -> None:
    response = await _signed_in(env, scope="launch/patient patient/Observation.rs?no-such-param=1")
    answer = location(response)
    assert answer["error"] == ["invalid_scope"] and "code" not in answer


async def test_online_access_lives_with_the_sign_in_session(env: Env) -> None:
    """permission-online: the grant remembers the session it was given in; ending the session (or
    its idle timeout) ends the grant's refresh. offline_access grants carry no session."""
    online, _ = await env.services.clients.register(operator_context(), Registration(
        "Online app", "patient/*.rs launch/patient online_access offline_access", auth_method="none",
        redirect_uris=[REDIRECT]))
    consent = await env.submit(await _signed_in(env, client_id=online.id, scope="launch/patient patient/*.rs "
                                                "online_access"), [("patient", env.patient)])
    grant = await env.grant_of(location(await env.submit(consent, [("decision", "approve")]))["code"][0])
    assert grant.session_hash is not None and "online_access" in grant.scopes
    settings = env.server.settings
    limits = {"idle_seconds": settings.session_idle_minutes * 60, "max_seconds": settings.session_max_hours * 3600}
    assert await env.server.grants.session_live(grant.session_hash, **limits)
    logout_page = await env.http.get("/oauth/logout")
    await env.submit(logout_page)
    assert not await env.server.grants.session_live(grant.session_hash, **limits)
    consent = await env.submit(await _signed_in(env, client_id=online.id, scope="launch/patient patient/*.rs "
                                                "offline_access"), [("patient", env.patient)])
    offline = await env.grant_of(location(await env.submit(consent, [("decision", "approve")]))["code"][0])
    assert offline.session_hash is None


async def test_repeated_failures_back_off_for_known_and_unknown_names_alike(env: Env) -> None:
    """NIST SP 800-63B rate limiting: after EHR_SIGNIN_FAILURES failures even the right password
    waits; an unknown name gets the same answers (no enumeration); each refusal is audited."""
    for username in ("alice", "nobody-here"):
        await env.services.db.execute("DELETE FROM signin_throttle WHERE key LIKE 'addr:%'")  # one address
        page = await env.start()
        for _ in range(env.server.settings.signin_failures):
            page = await env.sign_in(page, password="wrong password, long enough", username=username)
            assert "Unknown username or wrong password" in page.text  # the last failure starts the wait
        page = await env.sign_in(page, password=PASSWORD, username=username)
        assert "Too many failed sign-ins" in page.text and 'id="sign-in"' in page.text
    refused = [e for e in await _audit(env, "login") if "back-off" in e.get("outcomeDesc", "")]
    assert len(refused) == 2
    # the address alone is throttled too: another name from it waits as well
    page = await env.sign_in(await env.start(), password=PASSWORD, username="carol-never-failed")
    assert "Too many failed sign-ins" in page.text
