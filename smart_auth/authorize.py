"""The authorization endpoint's browser side: SMART App Launch 2.x authorization code flow (RFC 6749
section 4.1 with RFC 7636 PKCE), the EHR's own app launcher (EHR launch) and sign-out.

Stateless between pages: the authorization request travels through every page in one hidden field,
``authz_request`` (its parameters, form-encoded), and is validated again on every step, so nothing
the browser sends is trusted without re-checking. The EHR launch handle travels raw in it and is
taken (once) only when the user approves. Server-side state is the signed-in session, launch handles
and, at the end, the grant and its one-time code (smart_auth/grants.py).

Cookies, all ``Secure; HttpOnly; Path=/oauth``:
- ``ehr_session`` (SameSite=Lax): the session id from ``GrantStore.start_session``;
- ``ehr_csrf`` (SameSite=Strict): a random value per browser that every form repeats in its hidden
  ``csrf`` field (double submit). Every POST that acts (``step`` = login, pick or consent; a launch;
  a sign-out) must carry it. The authorization request itself may arrive by POST from the app
  (AUTHZ-01, ``authorize-post``): a POST without ``step`` acts on nothing and is answered like a GET.
"""

from __future__ import annotations

import hmac
import html
import json
import re
import secrets
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import MultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ehr.context import AccessContext
from ehr.errors import EhrError
from ehr.fhir.search.query import parse
from ehr.store.clients import Client
from ehr.store.records import Version
from ehr.store.search import SEARCHABLE, supported_params
from smart_auth.pages import (
    consent_page,
    launcher_page,
    login_page,
    message_page,
    patient_picker_page,
    security_headers,
)
from smart_auth.scopes import KNOWN_SCOPES, InvalidScope, Permissions
from smart_auth.server import AuthServer, OAuthError, actor_context, granted_scopes
from smart_auth.users import User

SESSION_COOKIE = "ehr_session"
CSRF_COOKIE = "ehr_csrf"
AUTHORIZE_PATH = "/oauth/authorize"
LAUNCHER_PATH = "/oauth/launcher"
LOGOUT_PATH = "/oauth/logout"
LOGIN_ERROR = "Unknown username or wrong password"

_COOKIE_PATH = "/oauth"
_CARRIED = "authz_request"
_PARAMS = (
    "response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge",
    "code_challenge_method", "launch", "nonce",
)
_STEPS = frozenset({"login", "pick", "consent"})
_MAX_BODY = 64 * 1024       # bytes of one form
_MAX_FIELDS = 200
_MAX_VALUE = 4096           # characters of one authorization parameter
_PICKER_SIZE = 20
_LAUNCHER_SIZE = 50
_CHALLENGE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")   # RFC 7636 section 4.2
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PATIENT_SEARCH = Permissions.parse("user/Patient.rs")


class _PageError(Exception):
    """Answered with a page, never a redirect (a form that is not ours, a body too large)."""

    def __init__(self, text: str, status: int = 400) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


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


class _Browser:
    """One request from the browser: its fields (query or form), its CSRF value, the cookies to set."""

    def __init__(self, request: Request, server: AuthServer, fields: MultiDict) -> None:
        self.request = request
        self.server = server
        self.fields = fields
        self.step = fields.get("step") if request.method == "POST" else None
        self.user: User | None = None
        self.targets: tuple[str, ...] = ()
        self.new_session: str | None = None
        self.clear_session = False
        known = request.cookies.get(CSRF_COOKIE)
        self.csrf = known or secrets.token_urlsafe(32)
        self._set_csrf = not known

    @classmethod
    async def read(cls, request: Request, server: AuthServer) -> _Browser:
        if request.method != "POST":
            return cls(request, server, MultiDict(request.query_params.multi_items()))
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise _PageError("Send the form as application/x-www-form-urlencoded.", 415)
        body = await _bounded_body(request)
        try:
            pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, errors="strict",
                              max_num_fields=_MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise _PageError("The form could not be read.") from None
        return cls(request, server, MultiDict(pairs))

    def check_csrf(self) -> None:
        """Double submit: the form's ``csrf`` must be the browser's own ``ehr_csrf`` cookie."""
        cookie = self.request.cookies.get(CSRF_COOKIE, "")
        sent = self.fields.get("csrf", "")
        if not (cookie and sent and hmac.compare_digest(cookie.encode(), sent.encode())):
            raise _PageError("This form has expired or did not come from this site. Please start again.")

    def page(self, html: str, status: int = 200) -> Response:
        return self._finish(HTMLResponse(html, status, headers=_headers(self.targets)))

    def error_page(self, text: str, status: int = 400) -> Response:
        return self.page(message_page("Something went wrong", text), status)

    def redirect(self, url: str) -> Response:
        return self._finish(RedirectResponse(url, 303, headers=_headers(self.targets)))

    def login(self, action: str, hidden: dict[str, str], error: str | None = None) -> Response:
        username = self.fields.get("username", "") if error else ""
        html = login_page(action=action, csrf=self.csrf, hidden={**hidden, "step": "login"}, error=error,
                          username=username)
        return self.page(html)

    def _finish(self, response: Response) -> Response:
        if self._set_csrf:
            response.set_cookie(CSRF_COOKIE, self.csrf, path=_COOKIE_PATH, secure=True, httponly=True,
                                samesite="strict")
        if self.new_session is not None:
            response.set_cookie(SESSION_COOKIE, self.new_session, path=_COOKIE_PATH, secure=True,
                                httponly=True, samesite="lax")
        elif self.clear_session:
            response.delete_cookie(SESSION_COOKIE, path=_COOKIE_PATH, secure=True, httponly=True, samesite="lax")
        return response


# -- the authorization endpoint ------------------------------------------------------------------


async def authorize(request: Request, server: AuthServer) -> Response:
    """GET and POST /oauth/authorize (AUTHZ-01): sign in, pick a patient, consent, then the code."""
    try:
        browser = await _Browser.read(request, server)
    except _PageError as err:
        return _bare_error(err)
    params = _authorization_params(browser.fields)
    try:
        client, redirect_uri = await _target(server, params)
    except OAuthError as err:
        await server.record(request, "authorize", error=err)
        return browser.error_page(err.description)
    browser.targets = _origins([redirect_uri])
    states = params.get("state", [])
    state = states[0] if len(states) == 1 else None
    try:
        if request.method == "POST" and browser.step is not None:
            browser.check_csrf()
        return await _steps(browser, _validated(params, client, redirect_uri, server.issuer))
    except _PageError as err:
        return browser.error_page(err.text, err.status)
    except OAuthError as err:
        await server.record(request, "authorize", client=client, user=browser.user, error=err)
        answer = [("error", err.error), ("error_description", err.description)]
        return browser.redirect(_with_query(redirect_uri, answer + ([("state", state)] if state else [])))


async def _steps(browser: _Browser, req: _AuthzRequest) -> Response:
    carried = {_CARRIED: req.carried}
    if browser.step not in (None, *_STEPS):
        raise _PageError("Unknown step.")
    browser.user = await _signed_in(browser)
    if browser.step == "login":
        browser.user = await _sign_in(browser, req.client)
        if browser.user is None:
            return browser.login(AUTHORIZE_PATH, carried, LOGIN_ERROR)
    if browser.user is None:
        return browser.login(AUTHORIZE_PATH, carried)
    user = browser.user
    offer = _offer(req, user)
    if browser.step == "consent":
        return await _decide(browser, req, user, offer)
    if not _needs_pick(req, user, offer):
        return _consent(browser, req, user, offer, None, None)
    picked = browser.fields.get("patient") if browser.step == "pick" else None
    if not picked:
        return await _picker(browser, req, user)
    version = await _readable_patient(browser, req.client, user, picked)
    return _consent(browser, req, user, offer, picked, _patient_display(version))


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
    if _one(params, "aud") != issuer:
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


def _offer(req: _AuthzRequest, user: User) -> Permissions:
    """What the user may grant: the request within the client's registration; patient/ scopes only
    where a patient will be in context (AUTHZ-06)."""
    offered = granted_scopes(req.scope, req.client, user)
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


async def _picker(browser: _Browser, req: _AuthzRequest, user: User) -> Response:
    query = browser.fields.get("q", "") if browser.request.method == "GET" else ""
    patients = await _patients(browser, req.client, user, query, _PICKER_SIZE)
    html = patient_picker_page(
        action=AUTHORIZE_PATH, csrf=browser.csrf, hidden={_CARRIED: req.carried, "step": "pick"},
        patients=patients, query=query, client_name=req.client.name,
    )
    return browser.page(html)


def _consent(
    browser: _Browser, req: _AuthzRequest, user: User, offer: Permissions, picked: str | None, display: str | None
) -> Response:
    hidden = {_CARRIED: req.carried, "step": "consent", **({"patient": picked} if picked else {})}
    html = consent_page(
        action=AUTHORIZE_PATH, csrf=browser.csrf, hidden=hidden, client_name=req.client.name,
        user_display=user.display_name, patient_display=display, scopes=offer.scope_string().split(),
        own_record=req.launch is None and _own_patient(user) is not None,
    )
    return browser.page(html)


async def _decide(browser: _Browser, req: _AuthzRequest, user: User, offer: Permissions) -> Response:
    """The consent form's answer: the grant is what was offered and left ticked (AUTHZ-07); its
    code and the unchanged state go to the redirect URI (AUTHZ-04)."""
    decision = browser.fields.get("decision")
    if decision == "deny":
        raise OAuthError("access_denied", "the user denied access")
    if decision != "approve":
        raise OAuthError("invalid_request", "the consent form was not answered")
    patient, encounter = await _launch_context(browser, req, user, offer)
    ticked = set(browser.fields.getlist("scope"))
    granted = [s for s in offer.scope_string().split() if s in ticked]
    if patient is None:
        granted = [s for s in granted if not s.startswith("patient/")]
    if not granted:
        raise OAuthError("access_denied", "no access was approved")
    scopes = " ".join(granted)
    server = browser.server
    grant, _ = await server.grants.create(
        client_id=req.client.id, user_id=user.id, scopes=scopes, patient=patient, encounter=encounter
    )
    code = await server.grants.issue_code(grant, redirect_uri=req.redirect_uri, challenge=req.challenge,
                                          nonce=req.nonce)
    await server.record(browser.request, "authorize", client=req.client, user=user,
                        detail={"client": req.client.id, "scopes": scopes}, patient=patient)
    return browser.redirect(_with_query(req.redirect_uri, [("code", code), ("state", req.state)]))


async def _launch_context(
    browser: _Browser, req: _AuthzRequest, user: User, offer: Permissions
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
    await _readable_patient(browser, req.client, user, picked)
    return picked, None


# -- signing in ----------------------------------------------------------------------------------


async def _signed_in(browser: _Browser) -> User | None:
    """The user of the browser's live session; a disabled user is signed out."""
    session = browser.request.cookies.get(SESSION_COOKIE)
    if not session:
        return None
    settings = browser.server.settings
    user_id = await browser.server.grants.session_user(
        session, idle_seconds=settings.session_idle_minutes * 60, max_seconds=settings.session_max_hours * 3600
    )
    user = await browser.server.users.by_id(user_id) if user_id else None
    return None if user is None or user.disabled else user


async def _sign_in(browser: _Browser, client: Client | None) -> User | None:
    """``step=login``: a new session for good credentials; otherwise None, with one generic message
    whatever was wrong (no user enumeration). Both outcomes are audited, never the password."""
    server, request = browser.server, browser.request
    username = browser.fields.get("username", "")
    user = await server.users.authenticate(username, browser.fields.get("password", ""))
    if user is None:
        named = await server.users.by_username(username)
        await server.record(request, "login", client=client, user=named,
                            error=OAuthError("access_denied", "unknown username or wrong password"))
        return None
    browser.new_session = await server.grants.start_session(user.id)
    await server.record(request, "login", client=client, user=user)
    return user


# -- patients ------------------------------------------------------------------------------------


def _patient_search_context(browser: _Browser, client: Client | None, user: User) -> AccessContext:
    """The user looking for a patient: Patient read and search, as far as the user's role allows
    (the store enforces the role)."""
    return replace(actor_context(browser.request, client, user), permissions=_PATIENT_SEARCH)


async def _patients(
    browser: _Browser, client: Client | None, user: User, name: str, limit: int
) -> list[tuple[str, str]]:
    """Up to ``limit`` patients the user may see, by name; none when the user may search none."""
    criteria = [("name", name)] if name else []
    ctx = _patient_search_context(browser, client, user)
    try:
        search = parse("Patient", [*criteria, ("_count", str(limit))], supported_params,
                       base=browser.server.issuer, strict=True, max_count=limit, resource_types=SEARCHABLE)
        _, matches, _ = await browser.server.store.search(ctx, search, query=urlencode(criteria))
    except EhrError:
        return []
    return [(found.res_id, _patient_display(found)) for found in matches]


async def _readable_patient(browser: _Browser, client: Client | None, user: User, patient: str) -> Version:
    if _FHIR_ID.fullmatch(patient):
        try:
            return await browser.server.store.read(_patient_search_context(browser, client, user), "Patient", patient)
        except EhrError:
            pass
    raise OAuthError("invalid_request", "the chosen patient is not available")


def _patient_display(version: Version) -> str:
    """``Family, Given (birthDate)`` from the Patient's first name."""
    resource = json.loads(version.body or b"{}")
    names = [n for n in resource.get("name", []) if isinstance(n, dict)]
    name = names[0] if names else {}
    given = " ".join(g for g in name.get("given", []) if isinstance(g, str))
    text = ", ".join(part for part in (name.get("family"), given) if isinstance(part, str) and part)
    text = text or name.get("text") or f"Patient {version.res_id}"
    birth = resource.get("birthDate")
    return f"{text} ({birth})" if isinstance(birth, str) else str(text)


# -- the EHR launcher and sign-out ---------------------------------------------------------------


async def launcher(request: Request, server: AuthServer) -> Response:
    """GET and POST /oauth/launcher: the EHR launches an app for a patient (SMART EHR launch)."""
    try:
        browser = await _Browser.read(request, server)
        if request.method == "POST":
            browser.check_csrf()
        apps = [c for c in await server.clients.list() if not c.disabled and c.launch_uri]
        browser.targets = _origins([c.launch_uri for c in apps if c.launch_uri])
        browser.user = await _signed_in(browser)
        if browser.step == "login":
            browser.user = await _sign_in(browser, None)
            if browser.user is None:
                return browser.login(LAUNCHER_PATH, {}, LOGIN_ERROR)
        if browser.user is None:
            return browser.login(LAUNCHER_PATH, {})
        if request.method == "POST" and browser.step is None:
            return await _launch(browser, browser.user, apps)
        patients = await _patients(browser, None, browser.user, "", _LAUNCHER_SIZE)
        html = launcher_page(action=LAUNCHER_PATH, csrf=browser.csrf, apps=[(c.id, c.name) for c in apps],
                             patients=patients, user_display=browser.user.display_name)
        return browser.page(html)
    except _PageError as err:
        return _bare_error(err)


async def _launch(browser: _Browser, user: User, apps: list[Client]) -> Response:
    client = next((c for c in apps if c.id == browser.fields.get("client_id")), None)
    if client is None or client.launch_uri is None:
        raise _PageError("Unknown app.")
    patient = browser.fields.get("patient", "")
    try:
        await _readable_patient(browser, None, user, patient)
    except OAuthError:
        raise _PageError("That patient is not available.") from None
    server = browser.server
    handle = await server.grants.create_launch(client_id=client.id, user_id=user.id, patient=patient)
    await server.record(browser.request, "launch", client=client, user=user, detail={"client": client.id},
                        patient=patient)
    return browser.redirect(_with_query(client.launch_uri, [("iss", server.issuer), ("launch", handle)]))


async def logout(request: Request, server: AuthServer) -> Response:
    """GET asks to confirm; POST /oauth/logout ends the session."""
    try:
        browser = await _Browser.read(request, server)
        if request.method != "POST":
            return browser.page(_logout_form(browser.csrf))
        browser.check_csrf()
    except _PageError as err:
        return _bare_error(err)
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        user = await _signed_in(browser)
        await server.grants.end_session(session)
        await server.record(request, "logout", user=user)
    browser.clear_session = True
    return browser.page(message_page("Signed out", "You are signed out."))


def _logout_form(csrf: str) -> str:
    # pages.py has no sign-out page yet: its message page with a form added, values escaped there too
    form = (
        f'<form method="post" action="{LOGOUT_PATH}">\n'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf, quote=True)}">\n'
        '<button type="submit" id="sign-out">Sign out</button>\n</form>\n'
    )
    return message_page("Sign out", "Sign out of the EHR?").replace("</main>", form + "</main>", 1)


# -- helpers -------------------------------------------------------------------------------------


def _headers(targets: tuple[str, ...]) -> dict[str, str]:
    return security_headers(form_targets=targets)


def _bare_error(err: _PageError) -> Response:
    return HTMLResponse(message_page("Something went wrong", err.text), err.status, headers=_headers(()))


def _origins(uris: list[str]) -> tuple[str, ...]:
    """Web origins of ``uris`` (where a form may end up), in the form the CSP takes."""
    found: dict[str, None] = {}
    for uri in uris:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        try:
            security_headers((origin,))
        except ValueError:
            continue
        found[origin] = None
    return tuple(found)


def _with_query(uri: str, pairs: list[tuple[str, str]]) -> str:
    """``uri`` with ``pairs`` appended to its query, which is kept as it is (RFC 6749 section 3.1.2)."""
    parts = urlsplit(uri)
    query = "&".join(q for q in (parts.query, urlencode(pairs)) if q)
    return parts._replace(query=query).geturl()


async def _bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > _MAX_BODY):
        raise _PageError("The form is too large.", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            raise _PageError("The form is too large.", 413)
    return bytes(body)
