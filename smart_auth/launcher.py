"""The EHR's own pages for a signed-in person beside the authorization flow: the app launcher (SMART
EHR launch), the apps that have access (each revocable), and sign-out."""

from __future__ import annotations

from datetime import UTC, datetime

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
    readable_patient,
    sign_in,
    signed_in,
    with_query,
)
from smart_auth.pages import access_page, launcher_page, logout_page, message_page
from smart_auth.server import AuthServer, OAuthError
from smart_auth.users import User

LAUNCHER_PATH = "/oauth/launcher"
ACCESS_PATH = "/oauth/access"
LOGOUT_PATH = "/oauth/logout"

_LAUNCHER_SIZE = 50


async def launcher(request: Request, server: AuthServer) -> Response:
    """GET and POST /oauth/launcher: the EHR launches an app for a patient (SMART EHR launch)."""
    try:
        browser = await Browser.read(request, server)
        if request.method == "POST":
            browser.check_csrf()
        apps = [c for c in await server.clients.list() if not c.disabled and c.launch_uri]
        browser.targets = origins([c.launch_uri for c in apps if c.launch_uri])
        browser.user = await signed_in(browser)
        if browser.step == "login":
            browser.user = await sign_in(browser, None)
            if browser.user is None:
                return browser.login(LAUNCHER_PATH, {}, browser.sign_in_error)
        if browser.user is None:
            return browser.login(LAUNCHER_PATH, {})
        if request.method == "POST" and browser.step is None:
            return await _launch(browser, browser.user, apps)
        patients = await find_patients(browser, None, browser.user, "", _LAUNCHER_SIZE)
        html = launcher_page(action=LAUNCHER_PATH, csrf=browser.csrf, apps=[(c.id, c.name) for c in apps],
                             patients=patients, user_display=browser.user.display_name)
        return browser.page(html)
    except PageError as err:
        return bare_error(err)


async def _launch(browser: Browser, user: User, apps: list[Client]) -> Response:
    client = next((c for c in apps if c.id == browser.fields.get("client_id")), None)
    if client is None or client.launch_uri is None:
        raise PageError("Unknown app.")
    patient = browser.fields.get("patient", "")
    try:
        await readable_patient(browser, None, user, patient)
    except OAuthError:
        raise PageError("That patient is not available.") from None
    server = browser.server
    handle = await server.grants.create_launch(client_id=client.id, user_id=user.id, patient=patient)
    await server.record(browser.request, "launch", client=client, user=user, detail={"client": client.id},
                        patient=patient)
    return browser.redirect(with_query(client.launch_uri, [("iss", server.issuer), ("launch", handle)]))


async def access(request: Request, server: AuthServer) -> Response:
    """GET and POST /oauth/access: the apps that have access for the signed-in person; POST revokes
    one (the grant and every token from it end at once)."""
    try:
        browser = await Browser.read(request, server)
        if request.method == "POST":
            browser.check_csrf()
        user = browser.user = await signed_in(browser)
        if browser.step == "login":
            user = browser.user = await sign_in(browser, None)
            if user is None:
                return browser.login(ACCESS_PATH, {}, browser.sign_in_error)
        if user is None:
            return browser.login(ACCESS_PATH, {})
        held = await server.grants.of_user(user.id, server.settings.access_token_seconds)
        if request.method == "POST" and browser.step is None:
            chosen = next((g for g, _ in held if g.id == browser.fields.get("grant")), None)
            if chosen is None:
                raise PageError("That access was already revoked.")
            await server.grants.revoke(chosen.id)
            await server.record(request, "revoke", user=user, detail={"grant": chosen.id, "client": chosen.client_id},
                                patient=chosen.patient)
            return browser.redirect(ACCESS_PATH)
        names = {c.id: c.name for c in await server.clients.list()}
        listed = [(g.id, names.get(g.client_id, "an unknown app"), g.scopes, _date(since)) for g, since in held]
        return browser.page(access_page(action=ACCESS_PATH, csrf=browser.csrf, user_display=user.display_name,
                                        grants=listed))
    except PageError as err:
        return bare_error(err)


def _date(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def logout(request: Request, server: AuthServer) -> Response:
    """GET asks to confirm; POST /oauth/logout ends the session."""
    try:
        browser = await Browser.read(request, server)
        if request.method != "POST":
            return browser.page(logout_page(action=LOGOUT_PATH, csrf=browser.csrf))
        browser.check_csrf()
    except PageError as err:
        return bare_error(err)
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        user = await signed_in(browser)
        await server.grants.end_session(session)
        await server.record(request, "logout", user=user)
    browser.clear_session = True
    return browser.page(message_page("Signed out", "You are signed out."))
