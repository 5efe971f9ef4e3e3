"""The browser side shared by the sign-in pages (smart_auth/authorize.py, smart_auth/launcher.py):
one request's fields, its CSRF check and cookies, signing in, and finding the patients a user may see.

Cookies, all ``Secure; HttpOnly; Path=/oauth``:
- ``ehr_session`` (SameSite=Lax): the session id from ``GrantStore.start_session``;
- ``ehr_csrf`` (SameSite=Strict): a random value per browser that every form repeats in its hidden
  ``csrf`` field (double submit). Every POST that acts must carry it.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from dataclasses import replace
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
from smart_auth.pages import login_page, message_page, security_headers
from smart_auth.scopes import Permissions
from smart_auth.server import AuthServer, OAuthError, actor_context
from smart_auth.users import User

SESSION_COOKIE = "ehr_session"
CSRF_COOKIE = "ehr_csrf"
LOGIN_ERROR = "Unknown username or wrong password"

_COOKIE_PATH = "/oauth"
_MAX_BODY = 64 * 1024       # bytes of one form
_MAX_FIELDS = 200
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PATIENT_SEARCH = Permissions.parse("user/Patient.rs")


class PageError(Exception):
    """Answered with a page, never a redirect (a form that is not ours, a body too large)."""

    def __init__(self, text: str, status: int = 400) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


class Browser:
    """One request from the browser: its fields (query or form), its CSRF value, the cookies to set."""

    def __init__(self, request: Request, server: AuthServer, fields: MultiDict) -> None:
        self.request = request
        self.server = server
        self.fields = fields
        self.step = fields.get("step") if request.method == "POST" else None
        self.user: User | None = None
        self.targets: tuple[str, ...] = ()
        self.new_session: str | None = None
        self.sign_in_error = LOGIN_ERROR
        self.clear_session = False
        known = request.cookies.get(CSRF_COOKIE)
        self.csrf = known or secrets.token_urlsafe(32)
        self._set_csrf = not known

    @classmethod
    async def read(cls, request: Request, server: AuthServer) -> Browser:
        if request.method != "POST":
            return cls(request, server, MultiDict(request.query_params.multi_items()))
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise PageError("Send the form as application/x-www-form-urlencoded.", 415)
        body = await bounded_body(request)
        try:
            pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, errors="strict",
                              max_num_fields=_MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise PageError("The form could not be read.") from None
        return cls(request, server, MultiDict(pairs))

    def check_csrf(self) -> None:
        """Double submit: the form's ``csrf`` must be the browser's own ``ehr_csrf`` cookie."""
        cookie = self.request.cookies.get(CSRF_COOKIE, "")
        sent = self.fields.get("csrf", "")
        if not (cookie and sent and hmac.compare_digest(cookie.encode(), sent.encode())):
            raise PageError("This form has expired or did not come from this site. Please start again.")

    def page(self, html: str, status: int = 200) -> Response:
        return self._finish(HTMLResponse(html, status, headers=headers(self.targets)))

    def error_page(self, text: str, status: int = 400) -> Response:
        return self.page(message_page("Something went wrong", text), status)

    def redirect(self, url: str) -> Response:
        return self._finish(RedirectResponse(url, 303, headers=headers(self.targets)))

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


# -- signing in ------------------------------------------------------------------------------------


async def signed_in(browser: Browser) -> User | None:
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


async def sign_in(browser: Browser, client: Client | None) -> User | None:
    """``step=login``: a new session for good credentials; otherwise None and ``browser.sign_in_error``,
    one generic message whatever was wrong (no user enumeration), or the back-off after repeated
    failures (smart_auth/throttle.py). Every outcome is audited, never the password."""
    server, request = browser.server, browser.request
    username = browser.fields.get("username", "")
    keys = [f"user:{username.lower()[:200]}", f"addr:{request.client.host if request.client else '-'}"]
    named = await server.users.by_username(username)
    wait = await server.throttle.wait(keys)
    if wait > 0:
        browser.sign_in_error = f"Too many failed sign-ins. Try again in {max(1, round(wait / 60))} minute(s)."
        await server.record(request, "login", client=client, user=named,
                            error=OAuthError("access_denied", "refused: sign-in back-off after repeated failures"))
        return None
    user = await server.users.authenticate(username, browser.fields.get("password", ""))
    if user is None:
        await server.throttle.failed(keys)
        browser.sign_in_error = LOGIN_ERROR
        await server.record(request, "login", client=client, user=named,
                            error=OAuthError("access_denied", "unknown username or wrong password"))
        return None
    await server.throttle.succeeded(keys[0])
    browser.new_session = await server.grants.start_session(user.id)
    await server.record(request, "login", client=client, user=user)
    return user


# -- patients --------------------------------------------------------------------------------------


def patient_search_context(browser: Browser, client: Client | None, user: User) -> AccessContext:
    """The user looking for a patient: Patient read and search, as far as the user's role allows
    (the store enforces the role)."""
    return replace(actor_context(browser.request, client, user), permissions=_PATIENT_SEARCH)


async def find_patients(
    browser: Browser, client: Client | None, user: User, name: str, limit: int
) -> list[tuple[str, str]]:
    """Up to ``limit`` patients the user may see, by name; none when the user may search none."""
    criteria = [("name", name)] if name else []
    ctx = patient_search_context(browser, client, user)
    try:
        search = parse("Patient", [*criteria, ("_count", str(limit))], supported_params,
                       base=browser.server.issuer, strict=True, max_count=limit, resource_types=SEARCHABLE)
        _, matches, _ = await browser.server.store.search(ctx, search, query=urlencode(criteria))
    except EhrError:
        return []
    return [(found.res_id, patient_display(found)) for found in matches]


async def readable_patient(browser: Browser, client: Client | None, user: User, patient: str) -> Version:
    if _FHIR_ID.fullmatch(patient):
        try:
            return await browser.server.store.read(patient_search_context(browser, client, user), "Patient", patient)
        except EhrError:
            pass
    raise OAuthError("invalid_request", "the chosen patient is not available")


def patient_display(version: Version) -> str:
    """``Family, Given (birthDate)`` from the Patient's first name."""
    resource = json.loads(version.body or b"{}")
    names = [n for n in resource.get("name", []) if isinstance(n, dict)]
    name = names[0] if names else {}
    given = " ".join(g for g in name.get("given", []) if isinstance(g, str))
    text = ", ".join(part for part in (name.get("family"), given) if isinstance(part, str) and part)
    text = text or name.get("text") or f"Patient {version.res_id}"
    birth = resource.get("birthDate")
    return f"{text} ({birth})" if isinstance(birth, str) else str(text)


# -- helpers ---------------------------------------------------------------------------------------


def headers(targets: tuple[str, ...]) -> dict[str, str]:
    return security_headers(form_targets=targets)


def bare_error(err: PageError) -> Response:
    return HTMLResponse(message_page("Something went wrong", err.text), err.status, headers=headers(()))


def origins(uris: list[str]) -> tuple[str, ...]:
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


def with_query(uri: str, pairs: list[tuple[str, str]]) -> str:
    """``uri`` with ``pairs`` appended to its query, which is kept as it is (RFC 6749 section 3.1.2)."""
    parts = urlsplit(uri)
    query = "&".join(q for q in (parts.query, urlencode(pairs)) if q)
    return parts._replace(query=query).geturl()


async def bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > _MAX_BODY):
        raise PageError("The form is too large.", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            raise PageError("The form is too large.", 413)
    return bytes(body)
