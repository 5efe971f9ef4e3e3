"""The authorization endpoint: SMART App Launch 2.x authorization code flow (RFC 6749 section 4.1
with RFC 7636 PKCE): sign in, pick a patient, consent, then the code.

Stateless between pages: the authorization request travels through every page in one hidden field,
``authz_request`` (its parameters, form-encoded), and is validated again on every step, so nothing
the browser sends is trusted without re-checking. The EHR launch handle travels raw in it and is
taken (once) only when the user approves. Server-side state is the signed-in session, launch handles
and, at the end, the grant and its one-time code (smart_auth/grants.py).

The authorization request itself may arrive by POST from the app (AUTHZ-01, ``authorize-post``): a
POST without ``step`` acts on nothing and is answered like a GET; every other POST carries the CSRF
value (smart_auth/browser.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import MultiDict
from starlette.requests import Request
from starlette.responses import Response

from ehr.store.clients import Client
from smart_auth.browser import (
    SESSION_COOKIE,
    Browser,
    PageError,
    bare_error,
    find_patients,
    origins,
    patient_display,
    readable_patient,
    sign_in,
    signed_in,
    with_query,
)
from smart_auth.granular import narrower
from smart_auth.pages import consent_page, patient_picker_page
from smart_auth.scopes import KNOWN_SCOPES, InvalidScope, Permissions
from smart_auth.server import AuthServer, OAuthError, granted_scopes
from smart_auth.users import User

AUTHORIZE_PATH = "/oauth/authorize"

_CARRIED = "authz_request"
_PARAMS = (
    "response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge",
    "code_challenge_method", "launch", "nonce",
)
_STEPS = frozenset({"login", "pick", "consent"})
_MAX_VALUE = 4096           # characters of one authorization parameter
_PICKER_SIZE = 20
_CHALLENGE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")   # RFC 7636 section 4.2


@dataclass(frozen=True, slots=True)
class _AuthzRequest:
    """An authorization request that passed every check that needs no user."""

    client: Client
    redirect_uri: str
    state: str
    scope: str
    challenge: str
    nonce: str | None
    launch: str | None
    carried: str        # the parameters again, form-encoded, for the next page's hidden field


async def authorize(request: Request, server: AuthServer) -> Response:
    """GET and POST /oauth/authorize (AUTHZ-01): sign in, pick a patient, consent, then the code."""
    try:
        browser = await Browser.read(request, server)
    except PageError as err:
        return bare_error(err)
    params = _authorization_params(browser.fields)
    try:
        client, redirect_uri = await _target(server, params)
    except OAuthError as err:
        await server.record(request, "authorize", error=err)
        return browser.error_page(err.description)
    browser.targets = origins([redirect_uri])
    states = params.get("state", [])
    state = states[0] if len(states) == 1 else None
    try:
        if request.method == "POST" and browser.step is not None:
            browser.check_csrf()
        return await _steps(browser, _validated(params, client, redirect_uri, server.issuer))
    except PageError as err:
        return browser.error_page(err.text, err.status)
    except OAuthError as err:
        await server.record(request, "authorize", client=client, user=browser.user, error=err)
        answer = [("error", err.error), ("error_description", err.description)]
        return browser.redirect(with_query(redirect_uri, answer + ([("state", state)] if state else [])))


async def _steps(browser: Browser, req: _AuthzRequest) -> Response:
    carried = {_CARRIED: req.carried}
    if browser.step not in (None, *_STEPS):
        raise PageError("Unknown step.")
    browser.user = await signed_in(browser)
    if browser.step == "login":
        browser.user = await sign_in(browser, req.client)
        if browser.user is None:
            return browser.login(AUTHORIZE_PATH, carried, browser.sign_in_error)
    if browser.user is None:
        return browser.login(AUTHORIZE_PATH, carried)
    user = browser.user
    offer = _offer(req, user, browser.server.issuer)
    if browser.step == "consent":
        return await _decide(browser, req, user, offer)
    if not _needs_pick(req, user, offer):
        return _consent(browser, req, user, offer, None, None)
    picked = browser.fields.get("patient") if browser.step == "pick" else None
    if not picked:
        return await _picker(browser, req, user)
    version = await readable_patient(browser, req.client, user, picked)
    return _consent(browser, req, user, offer, picked, patient_display(version))


def _authorization_params(fields: MultiDict) -> dict[str, list[str]]:
    """The request's own parameters: from the hidden ``authz_request`` field on our pages, else as
    the app sent them."""
    carried = fields.getlist(_CARRIED)
    pairs = parse_qsl(carried[0], keep_blank_values=True) if len(carried) == 1 else fields.multi_items()
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        if name in _PARAMS:
            params.setdefault(name, []).append(value)
    return params


def _one(params: dict[str, list[str]], name: str) -> str | None:
    """RFC 6749 section 3.1: a parameter is sent at most once; an empty one counts as absent."""
    values = params.get(name, [])
    if len(values) > 1:
        raise OAuthError("invalid_request", f"{name} is repeated")
    if values and len(values[0]) > _MAX_VALUE:
        raise OAuthError("invalid_request", f"{name} is too long")
    return values[0] if values and values[0] else None


async def _target(server: AuthServer, params: dict[str, list[str]]) -> tuple[Client, str]:
    """The client and its registered redirect URI; when either is wrong nothing may be redirected
    (RFC 6749 section 4.1.2.1)."""
    client_id = _one(params, "client_id")
    client = await server.clients.by_id(client_id) if client_id else None
    if client is None or client.disabled or "authorization_code" not in client.grant_types:
        raise OAuthError("unauthorized_client", "Unknown or disabled app, or one not registered to sign users in.")
    redirect_uri = _one(params, "redirect_uri")
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        raise OAuthError("invalid_request", "The redirect_uri is not one this app registered.")
    return client, redirect_uri


def _validated(params: dict[str, list[str]], client: Client, redirect_uri: str, issuer: str) -> _AuthzRequest:
    """Every check that needs no user (AUTHZ-02, AUTHZ-03); each failure is redirected."""
    if _one(params, "response_type") != "code":
        raise OAuthError("unsupported_response_type", "response_type must be code")
    state = _one(params, "state")
    if state is None:
        raise OAuthError("invalid_request", "state is required")
    if (_one(params, "aud") or "").rstrip("/") != issuer:  # the FHIR base, with or without its final slash
        raise OAuthError("invalid_request", "aud must be this server's FHIR base URL")
    challenge = _one(params, "code_challenge")
    if challenge is None or _one(params, "code_challenge_method") != "S256":
        raise OAuthError("invalid_request", "PKCE is required: code_challenge with code_challenge_method S256")
    if not _CHALLENGE.fullmatch(challenge):
        raise OAuthError("invalid_request", "code_challenge is not an RFC 7636 S256 challenge")
    scope = _one(params, "scope")
    if scope is None or not scope.strip():
        raise OAuthError("invalid_request", "scope is required")
    launch = _one(params, "launch")
    _check_scope(scope, launch)
    carried = urlencode([(name, value) for name in _PARAMS for value in params.get(name, [])])
    return _AuthzRequest(client, redirect_uri, state, scope, challenge, _one(params, "nonce"), launch, carried)


def _check_scope(scope: str, launch: str | None) -> None:
    try:
        requested = Permissions.parse(scope)
    except InvalidScope as exc:
        raise OAuthError("invalid_scope", str(exc)) from None
    unknown = [s for s in requested.other_scopes if s not in KNOWN_SCOPES]
    if unknown:
        raise OAuthError("invalid_scope", f"unknown scope {unknown[0]!r}")
    if launch is not None and not requested.has("launch"):
        raise OAuthError("invalid_scope", "the launch parameter needs the launch scope")


def _offer(req: _AuthzRequest, user: User, base: str) -> Permissions:
    """What the user may grant: the request within the client's registration; patient/ scopes only
    where a patient will be in context (AUTHZ-06)."""
    offered = granted_scopes(req.scope, req.client, user, base)
    if req.launch is not None and not offered.has("launch"):
        raise OAuthError("invalid_scope", "this app is not registered for the launch scope")
    if req.launch is None and not offered.has("launch/patient"):
        offered = Permissions(tuple(g for g in offered.grants if g.context != "patient"), offered.other_scopes)
    if not offered.grants and not offered.other_scopes:
        raise OAuthError("invalid_scope", "none of the requested scopes can be granted")
    return offered


def _needs_pick(req: _AuthzRequest, user: User, offer: Permissions) -> bool:
    return req.launch is None and offer.has("launch/patient") and _own_patient(user) is None


def _own_patient(user: User) -> str | None:
    kind, _, ident = (user.fhir_user or "").partition("/")
    return ident if kind == "Patient" and ident else None


async def _picker(browser: Browser, req: _AuthzRequest, user: User) -> Response:
    query = browser.fields.get("q", "") if browser.request.method == "GET" else ""
    patients = await find_patients(browser, req.client, user, query, _PICKER_SIZE)
    html = patient_picker_page(
        action=AUTHORIZE_PATH, csrf=browser.csrf, hidden={_CARRIED: req.carried, "step": "pick"},
        patients=patients, query=query, client_name=req.client.name,
    )
    return browser.page(html)


def _consent(
    browser: Browser, req: _AuthzRequest, user: User, offer: Permissions, picked: str | None, display: str | None
) -> Response:
    hidden = {_CARRIED: req.carried, "step": "consent", **({"patient": picked} if picked else {})}
    html = consent_page(
        action=AUTHORIZE_PATH, csrf=browser.csrf, hidden=hidden, client_name=req.client.name,
        user_display=user.display_name, patient_display=display, scopes=offer.scope_string().split(),
        own_record=req.launch is None and _own_patient(user) is not None, narrower=narrower(offer),
    )
    return browser.page(html)


async def _decide(browser: Browser, req: _AuthzRequest, user: User, offer: Permissions) -> Response:
    """The consent form's answer: the grant is what was offered and left ticked (AUTHZ-07); its
    code and the unchanged state go to the redirect URI (AUTHZ-04)."""
    decision = browser.fields.get("decision")
    if decision == "deny":
        raise OAuthError("access_denied", "the user denied access")
    if decision != "approve":
        raise OAuthError("invalid_request", "the consent form was not answered")
    patient, encounter = await _launch_context(browser, req, user, offer)
    ticked = set(browser.fields.getlist("scope"))
    granted = [s for s in [*offer.scope_string().split(), *narrower(offer)] if s in ticked]
    if patient is None:
        granted = [s for s in granted if not s.startswith("patient/")]
    if not granted:
        raise OAuthError("access_denied", "no access was approved")
    scopes = " ".join(granted)
    server = browser.server
    online = "online_access" in granted and "offline_access" not in granted
    session = (browser.new_session or browser.request.cookies.get(SESSION_COOKIE)) if online else None
    grant, _ = await server.grants.create(
        client_id=req.client.id, user_id=user.id, scopes=scopes, patient=patient, encounter=encounter,
        session=session,
    )
    code = await server.grants.issue_code(grant, redirect_uri=req.redirect_uri, challenge=req.challenge,
                                          nonce=req.nonce)
    await server.record(browser.request, "authorize", client=req.client, user=user,
                        detail={"client": req.client.id, "scopes": scopes}, patient=patient)
    return browser.redirect(with_query(req.redirect_uri, [("code", code), ("state", req.state)]))


async def _launch_context(
    browser: Browser, req: _AuthzRequest, user: User, offer: Permissions
) -> tuple[str | None, str | None]:
    """The patient (and encounter) the grant is bound to: the EHR launch's (AUTHZ-05), the user's
    own record, or the picked patient, which the user must still be able to read."""
    if req.launch is not None:
        taken = await browser.server.grants.take_launch(req.launch, client_id=req.client.id, user_id=user.id)
        if taken is None:
            raise OAuthError("invalid_request", "unknown or expired launch")
        return taken
    if not offer.has("launch/patient"):
        return None, None
    own = _own_patient(user)
    if own is not None:
        return own, None
    picked = browser.fields.get("patient")
    if not picked:
        raise OAuthError("invalid_request", "no patient was chosen")
    await readable_patient(browser, req.client, user, picked)
    return picked, None
