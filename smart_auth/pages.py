"""The authorization server's own pages: sign in, pick a patient, approve scopes, launch an app.

Pure functions from values to HTML5 text. Every interpolated value goes through :func:`_e`
(``html.escape`` with quotes, plus carriage returns as ``&#13;`` so that hidden values survive the
parser's newline normalisation). No scripts and no external assets; the one inline ``<style>`` is
:data:`STYLE`, and :func:`security_headers` pins it by hash, so the Content-Security-Policy can
refuse everything else.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl

from smart_auth.scopes import InvalidScope, parse_scope

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; color: #1a1a1a; background: #f6f7f9; margin: 0; }
main { max-width: 36rem; margin: 2rem auto; padding: 1.5rem 2rem; background: #fff; border-radius: 8px; }
h1 { font-size: 1.5rem; margin-top: 0; }
label, legend { display: block; font-weight: 600; }
input[type=text], input[type=password], input[type=search], select {
  display: block; width: 100%; box-sizing: border-box; margin: .25rem 0 1rem; padding: .5rem;
  font: inherit; border: 1px solid #767676; border-radius: 4px;
}
fieldset { border: 0; padding: 0; margin: 0 0 1rem; }
ul.choices { list-style: none; padding: 0; }
ul.choices li { display: flex; gap: .5rem; align-items: baseline; margin: .5rem 0; }
ul.choices label { font-weight: normal; }
code { font-size: .85em; color: #555; word-break: break-all; }
button { font: inherit; padding: .5rem 1.25rem; border-radius: 4px; border: 1px solid #0b57d0;
  background: #0b57d0; color: #fff; cursor: pointer; }
button.secondary { background: #fff; color: #0b57d0; }
:focus-visible { outline: 3px solid #f9a825; outline-offset: 2px; }
.error { color: #b00020; font-weight: 600; }
.notice { border-left: 4px solid #b26a00; background: #fff4e0; padding: .75rem 1rem; }
.actions { display: flex; gap: 1rem; }
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

# A form may post to, or be redirected to, an origin ("https://app.example:9000") or a scheme
# ("com.example.app:", for native apps); anything else could smuggle CSP directives or headers.
_FORM_TARGET = re.compile(
    r"[a-z][a-z0-9+.\-]*:(//(\[[0-9a-f:.]+\]|[a-z0-9\-]+(\.[a-z0-9\-]+)*)(:[0-9]{1,5})?)?", re.IGNORECASE
)


def security_headers(form_targets: tuple[str, ...] = ()) -> dict[str, str]:
    """Headers for every page; ``form_targets`` are where a form submission may redirect to."""
    for target in form_targets:
        if not _FORM_TARGET.fullmatch(target):
            raise ValueError("form target must be an origin such as https://app.example:9000")
    form_action = " ".join(["'self'", *dict.fromkeys(form_targets)])
    policy = (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self' data:; "
        f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
    }


def _e(value: str) -> str:
    return html.escape(value, quote=True).replace("\r", "&#13;")


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n<h1>{_e(title)}</h1>\n{body}</main>\n</body>\n</html>\n"
    )


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{_e(name)}" value="{_e(value)}">\n'


def _carried(csrf: str | None, hidden: Mapping[str, str]) -> str:
    fields = [_hidden(name, value) for name, value in hidden.items()]
    return ("" if csrf is None else _hidden("csrf", csrf)) + "".join(fields)


def login_page(
    *, action: str, csrf: str, hidden: Mapping[str, str], error: str | None = None, username: str = ""
) -> str:
    alert = "" if error is None else f'<p role="alert" class="error" id="error">{_e(error)}</p>\n'
    body = (
        f'{alert}<form method="post" action="{_e(action)}">\n{_carried(csrf, hidden)}'
        '<label for="username">Username</label>\n'
        f'<input type="text" name="username" id="username" value="{_e(username)}" autocomplete="username" '
        'autocapitalize="none" spellcheck="false" required>\n'
        '<label for="password">Password</label>\n'
        '<input type="password" name="password" id="password" autocomplete="current-password" required>\n'
        '<button type="submit" id="sign-in">Sign in</button>\n</form>\n'
    )
    return _document("Sign in", body)


def patient_picker_page(
    *,
    action: str,
    csrf: str,
    hidden: Mapping[str, str],
    patients: Sequence[tuple[str, str]],
    query: str = "",
    client_name: str,
) -> str:
    search = (
        f'<form method="get" action="{_e(action)}" role="search">\n{_carried(None, hidden)}'
        '<label for="q">Find a patient by name or identifier</label>\n'
        f'<input type="search" name="q" id="q" value="{_e(query)}">\n'
        '<button type="submit" id="find" class="secondary">Find</button>\n</form>\n'
    )
    if not patients:
        return _document("Choose a patient", search + "<p>No matching patients.</p>\n")
    choices = "".join(
        f'<li><input type="radio" name="patient" value="{_e(pid)}" id="patient-{_e(pid)}" required>'
        f'<label for="patient-{_e(pid)}">{_e(display)}</label></li>\n'
        for pid, display in patients
    )
    choose = (
        f'<form method="post" action="{_e(action)}">\n{_carried(csrf, hidden)}'
        f"<fieldset>\n<legend>Whose record will {_e(client_name)} use?</legend>\n"
        f'<ul class="choices">\n{choices}</ul>\n</fieldset>\n'
        '<button type="submit" id="choose">Continue</button>\n</form>\n'
    )
    return _document("Choose a patient", search + choose)


# Scopes the app cannot work without: approving the app approves these.
_REQUIRED_SCOPES = frozenset({"openid", "fhirUser", "launch", "launch/patient", "launch/encounter"})


def _scope_item(n: int, scope: str, own_record: bool, checked: bool = True) -> str:
    label = f"{_e(describe_scope(scope, own_record=own_record))} <code>{_e(scope)}</code>"
    if scope in _REQUIRED_SCOPES:
        return f"<li>{_hidden('scope', scope).rstrip()}<span>{label}</span></li>\n"
    return (
        f'<li><input type="checkbox" name="scope" value="{_e(scope)}" id="scope-{n}"{" checked" if checked else ""}>'
        f'<label for="scope-{n}">{label}</label></li>\n'
    )


def consent_page(
    *,
    action: str,
    csrf: str,
    hidden: Mapping[str, str],
    client_name: str,
    user_display: str,
    patient_display: str | None,
    scopes: Sequence[str],
    own_record: bool = False,
    narrower: Sequence[str] = (),
) -> str:
    """``own_record``: the signed-in user is the patient, so ``patient/`` scopes read "your record".
    ``narrower``: category scopes the user may grant instead of a whole type (unticked at first)."""
    who = f"<p>Signed in as <strong>{_e(user_display)}</strong>.</p>\n"
    if patient_display is not None:
        who += f"<p>Patient: <strong>{_e(patient_display)}</strong></p>\n"
    items = "".join(_scope_item(n, scope, own_record) for n, scope in enumerate(scopes))
    if narrower:
        first = len(scopes)
        items += (
            '<li class="narrower"><span>Or allow only some kinds of them:</span>\n<ul class="choices">\n'
            + "".join(_scope_item(first + n, s, own_record, checked=False) for n, s in enumerate(narrower))
            + "</ul></li>\n"
        )
    notice = ""
    if "offline_access" in scopes:
        notice = (
            '<p role="note" id="offline-notice" class="notice"><strong>Lasting access.</strong> '
            f"{_e(client_name)} will keep access after you sign out, until you or an administrator "
            "revoke it. Untick “keep access after you sign out” to prevent this.</p>\n"
        )
    body = (
        f'{who}<form method="post" action="{_e(action)}">\n{_carried(csrf, hidden)}'
        f'<fieldset>\n<legend>{_e(client_name)} asks to:</legend>\n<ul class="choices">\n{items}</ul>\n'
        f'</fieldset>\n{notice}<div class="actions">\n'
        '<button type="submit" name="decision" value="approve" id="approve">Allow</button>\n'
        '<button type="submit" name="decision" value="deny" id="deny" class="secondary">Deny</button>\n'
        "</div>\n</form>\n"
    )
    return _document("Allow access?", body)


def _options(choices: Sequence[tuple[str, str]]) -> str:
    return "".join(f'<option value="{_e(value)}">{_e(text)}</option>\n' for value, text in choices)


def launcher_page(
    *,
    action: str,
    csrf: str,
    apps: Sequence[tuple[str, str]],
    patients: Sequence[tuple[str, str]],
    user_display: str,
) -> str:
    body = (
        f"<p>Signed in as <strong>{_e(user_display)}</strong>.</p>\n"
        f'<form method="post" action="{_e(action)}">\n{_carried(csrf, {})}'
        f'<label for="client_id">App</label>\n<select name="client_id" id="client_id" required>\n'
        f"{_options(apps)}</select>\n"
        f'<label for="patient">Patient</label>\n<select name="patient" id="patient" required>\n'
        f"{_options(patients)}</select>\n"
        '<button type="submit" id="launch">Launch</button>\n</form>\n'
    )
    return _document("Launch an app", body)


def message_page(title: str, text: str) -> str:
    return _document(title, f"<p>{_e(text)}</p>\n")


def access_page(*, action: str, csrf: str, user_display: str, grants: Sequence[tuple[str, str, str, str]]) -> str:
    """The apps that have access for the signed-in person: (grant id, app name, scopes, since)."""
    if not grants:
        items = "<p>No app has access.</p>\n"
    else:
        items = "<ul class=\"choices\">\n" + "".join(
            f"<li><strong>{_e(app)}</strong> since {_e(since)}: "
            + ", ".join(_e(describe_scope(s)) for s in scopes.split())
            + f'\n<form method="post" action="{_e(action)}">{_carried(csrf, {"grant": grant})}'
            f'<button type="submit" id="revoke-{_e(grant)}" class="secondary">Revoke</button></form></li>\n'
            for grant, app, scopes, since in grants
        ) + "</ul>\n"
    body = f"<p>Signed in as <strong>{_e(user_display)}</strong>. Apps that can reach your records:</p>\n{items}"
    return _document("Apps with access", body)


def logout_page(*, action: str, csrf: str) -> str:
    body = (
        "<p>Sign out of the EHR?</p>\n"
        f'<form method="post" action="{_e(action)}">\n{_carried(csrf, {})}'
        '<button type="submit" id="sign-out">Sign out</button>\n</form>\n'
    )
    return _document("Sign out", body)


# --- scopes in plain words -------------------------------------------------------------------

_SIMPLE_SCOPES = {
    "openid": "know who you are (your name and user id)",
    "fhirUser": "know who you are (your name and user id)",
    "profile": "know who you are (your name and profile details)",
    "launch": "receive the context the EHR launched it in",
    "launch/patient": "ask you to select a patient",
    "launch/encounter": "ask you to select an encounter (a visit or admission)",
    "offline_access": "keep access after you sign out, until you revoke it",
    "online_access": "keep access while you stay signed in",
}

_NOUNS = {
    "*": "all types of data",
    "Observation": "observations (lab results, vital signs and other measurements)",
    "Condition": "conditions (problems and diagnoses)",
    "MedicationRequest": "medication orders",
    "AllergyIntolerance": "allergies",
    "Patient": "demographics (name, birth date, contact details)",
    "Immunization": "immunizations (vaccinations)",
    "Procedure": "procedures (operations and treatments)",
    "DiagnosticReport": "diagnostic reports (lab and imaging reports)",
    "DocumentReference": "documents (clinical notes, letters and scans)",
    "Encounter": "visits and hospital stays",
    "CarePlan": "care plans",
    "Goal": "health goals",
    "CareTeam": "care teams",
    "Device": "devices (implants and equipment)",
    "Provenance": "record history (who created or changed each record)",
    "Practitioner": "details of doctors, nurses and other clinicians",
    "Organization": "details of hospitals, clinics and other organizations",
    "Location": "details of places where care is given",
}

_VERBS = {"c": "create new", "r": "read", "u": "update", "d": "delete", "s": "search"}

_WHERE = {"user": "records you can access", "system": "all records on this server"}


def _join(words: Sequence[str], conjunction: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def _noun(resource_type: str) -> str:
    if resource_type in _NOUNS:
        return _NOUNS[resource_type]
    words = " ".join(re.findall(r"[A-Z]+(?![a-z])|[A-Z][a-z]*", resource_type)).lower()
    if re.search(r"[^aeiou]y$", words):
        return words[:-1] + "ies"
    return words + ("es" if re.search(r"(s|x|ch|sh)$", words) else "s")


def _restriction(query: str) -> str | None:
    """``category=http://...|laboratory&status=final`` -> ``category laboratory and status final``."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs or any(not name or not value for name, value in pairs):
        return None
    terms = []
    for name, value in pairs:
        codes = [code.rsplit("|", 1)[-1] or code for code in value.split(",")]
        terms.append(f"{name.lstrip('_')} {_join(codes, 'or')}")
    return _join(terms)


def describe_scope(scope: str, *, own_record: bool = False) -> str:
    """What ``scope`` lets an app do, in plain words, to complete "<app> asks to: ...". Never raises."""
    unknown = f"{scope} (not recognised)"
    if scope in _SIMPLE_SCOPES:
        return _SIMPLE_SCOPES[scope]
    try:
        grant = parse_scope(scope)
    except InvalidScope:
        return unknown
    if grant is None:
        return unknown
    verbs = _join([_VERBS[letter] for letter in "cruds" if letter in grant.letters])
    where = _WHERE.get(grant.context, "your record" if own_record else "the selected patient's record")
    text = f"{verbs} {_noun(grant.resource_type)} in {where}"
    if grant.query is None:
        return text
    restriction = _restriction(grant.query)
    return unknown if restriction is None else f"{text}, only those with {restriction}"
