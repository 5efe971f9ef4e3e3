"""SMART App Launch against a live server, played by its two sides over real TLS.

- :class:`OAuth` is the app: discovery, the authorization request with PKCE (RFC 7636 S256), and the
  token, introspection and revocation endpoints, authenticating as a public client, with HTTP Basic
  (``client_secret_basic``) or with a signed assertion (``private_key_jwt``, RFC 7523).
- :class:`Browser` is the person: it opens the authorization URL and works through the server's own
  pages as they come (sign in, pick a patient, tick or untick scopes, allow or deny), reading them
  with ``html.parser``. It stops at the first redirect that leaves the server and returns that URL
  (the app's redirect URI with ``code``/``state`` or ``error``), which it never follows.
- :func:`deploy` builds a home with users, apps and a small patient record through the ``ehr`` CLI
  and serves it.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, partial
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urljoin, urlsplit

import httpx
from joserfc import jwk

from tests.e2e.server import EHR, client_context, environment, running_server
from tests.smart_auth.jwt_helpers import make_assertion, make_client_key
from tests.smart_auth.oauth import verifier_and_challenge

REDIRECT = "https://app.example/cb"
LAUNCH_URI = "https://app.example/launch"
PASSWORD = "correct horse battery staple"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# -- the app ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pkce:
    """RFC 7636 with S256: the app keeps the verifier, the authorization request carries the challenge."""

    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        return cls(*verifier_and_challenge())


@dataclass(frozen=True)
class App:
    """A registered client as the app knows itself."""

    client_id: str
    method: str                     # none | client_secret_basic | private_key_jwt
    secret: str | None = None
    key: jwk.Key | None = None
    kid: str | None = None
    redirect_uri: str = REDIRECT


@dataclass(frozen=True)
class AuthzRequest:
    url: str
    state: str
    pkce: Pkce


class OAuth:
    """The app's side of the flows; every answer is the raw ``httpx.Response``."""

    def __init__(self, base: str, verify: ssl.SSLContext) -> None:
        self.base = base
        self.http = httpx.Client(verify=verify, timeout=30)
        self.config: dict[str, Any] = self.http.get(f"{base}/.well-known/smart-configuration").json()

    def request(self, app: App, scope: str, *, launch: str | None = None, aud: str | None = None,
                pkce: Pkce | None = None) -> AuthzRequest:
        pkce = pkce or Pkce.new()
        state = secrets.token_urlsafe(16)
        params = {"response_type": "code", "client_id": app.client_id, "redirect_uri": app.redirect_uri,
                  "scope": scope, "state": state, "aud": self.base if aud is None else aud,
                  "code_challenge": pkce.challenge, "code_challenge_method": "S256"}
        if launch is not None:
            params["launch"] = launch
        return AuthzRequest(f"{self.config['authorization_endpoint']}?{urlencode(params)}", state, pkce)

    def exchange(self, app: App, code: str, verifier: str | None, **extra: str) -> httpx.Response:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri, **extra}
        if verifier is not None:
            form["code_verifier"] = verifier
        return self.post("token_endpoint", app, form)

    def refresh(self, app: App, refresh_token: str, scope: str | None = None) -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self.post("token_endpoint", app, form | ({"scope": scope} if scope else {}))

    def client_credentials(self, app: App, scope: str) -> httpx.Response:
        return self.post("token_endpoint", app, {"grant_type": "client_credentials", "scope": scope})

    def introspect(self, app: App, token: str) -> httpx.Response:
        return self.post("introspection_endpoint", app, {"token": token})

    def revoke(self, app: App, token: str) -> httpx.Response:
        return self.post("revocation_endpoint", app, {"token": token})

    def post(self, endpoint: str, app: App, form: dict[str, str]) -> httpx.Response:
        """POST ``form`` to the endpoint named in the SMART configuration, as ``app`` authenticates."""
        headers = {"Accept": "application/json"}
        if app.method == "client_secret_basic":   # RFC 6749 2.3.1: both parts form-urlencoded first
            pair = f"{quote_plus(app.client_id)}:{quote_plus(app.secret or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif app.method == "private_key_jwt":
            assert app.key is not None
            assertion = make_assertion(app.key, kid=app.kid, client_id=app.client_id,
                                       audience=self.config["token_endpoint"], alg="RS384")
            form = {**form, "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
        else:
            form = {"client_id": app.client_id, **form}
        return self.http.post(self.config[endpoint], data=form, headers=headers)


def query(url: str) -> dict[str, str]:
    """The query parameters of a redirect (each expected once)."""
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


# -- the person ------------------------------------------------------------------------------------


@dataclass
class Control:
    tag: str                        # input | select | button
    type: str
    name: str
    value: str
    id: str
    checked: bool = False
    options: list[str] = field(default_factory=list)


@dataclass
class Form:
    action: str
    method: str
    controls: list[Control] = field(default_factory=list)

    def value(self, name: str) -> str | None:
        return next((c.value for c in self.controls if c.name == name and c.type == "hidden"), None)

    def values(self, name: str) -> list[str]:
        return [c.value for c in self.controls if c.name == name and c.tag == "input"]

    def fill(self, fields: Mapping[str, str], tick: Callable[[Control], bool] | None = None,
             press: str | None = None) -> list[tuple[str, str]]:
        """What a browser submits: hidden and typed fields, ticked boxes, chosen options and the
        pressed button (by id). A select only takes one of its options."""
        pairs: list[tuple[str, str]] = []
        for c in self.controls:
            if c.tag == "button":
                if c.id == press and c.name:
                    pairs.append((c.name, c.value))
            elif c.type in ("checkbox", "radio"):
                if tick(c) if tick else c.checked:
                    pairs.append((c.name, c.value))
            elif c.tag == "select":
                chosen = fields.get(c.name, c.options[0] if c.options else "")
                assert chosen in c.options, f"{chosen!r} is not offered in {c.name}: {c.options}"
                pairs.append((c.name, chosen))
            elif c.name:
                pairs.append((c.name, fields.get(c.name, c.value)))
        return pairs


class _Forms(HTMLParser):
    """Every form of a page with its controls, and the page's text (for the message of an error page)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.text: list[str] = []
        self._select: Control | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif tag in ("input", "button", "select") and self.forms:
            kind = a.get("type", "submit" if tag == "button" else "text").lower()
            control = Control(tag, kind, a.get("name", ""), a.get("value", ""), a.get("id", ""), "checked" in a)
            self.forms[-1].controls.append(control)
            self._select = control if tag == "select" else self._select
        elif tag == "option" and self._select is not None:
            self._select.options.append(a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


@dataclass(frozen=True)
class Consent:
    """What the person does: which patient to pick, which offered scopes to leave ticked."""

    patient: str | None = None
    keep: Callable[[str], bool] | None = None   # None: leave each box as the page ticked it
    approve: bool = True


@dataclass
class Outcome:
    redirect: str                                       # where the server sent the browser away
    offered: list[str] = field(default_factory=list)    # scopes on the consent page
    pages: list[str] = field(default_factory=list)      # the steps seen: login, pick, consent

    @property
    def params(self) -> dict[str, str]:
        return query(self.redirect)


def _ticked(keep: Callable[[str], bool] | None, control: Control) -> bool:
    return control.name == "scope" and (keep(control.value) if keep else control.checked)


class Browser:
    """One person's browser: a cookie jar and the server's pages."""

    def __init__(self, base: str, verify: ssl.SSLContext, username: str, password: str = PASSWORD) -> None:
        parts = urlsplit(base)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.http = httpx.Client(verify=verify, timeout=30)
        self.credentials = {"username": username, "password": password}

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def authorize(self, url: str, consent: Consent = Consent(), *, post: bool = False) -> Outcome:
        """Open the authorization URL (or POST its parameters: authorize-post) and answer every page."""
        if post:
            endpoint, _, params = url.partition("?")
            response = self.http.post(endpoint, content=params, headers={"Content-Type": _FORM})
        else:
            response = self.http.get(url)
        outcome = Outcome("")
        for _ in range(8):
            if response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                if not target.startswith(self.origin + "/"):
                    outcome.redirect = target
                    return outcome
                response = self.http.get(target)
                continue
            form = self._form(response)
            step = form.value("step") or ""
            outcome.pages.append(step)
            if step == "login":
                response = self._submit(response, form, form.fill(self.credentials))
            elif step == "pick":
                response = self._submit(response, form, form.fill(
                    {}, tick=lambda c: c.name == "patient" and c.value == consent.patient))
            elif step == "consent":
                outcome.offered = form.values("scope")
                press = "approve" if consent.approve else "deny"
                pairs = form.fill({}, tick=partial(_ticked, consent.keep), press=press)
                response = self._submit(response, form, pairs)
            else:
                raise AssertionError(f"unexpected page {step!r}")
        raise AssertionError("the authorization did not end in a redirect")

    def launch(self, client_id: str, patient: str) -> str:
        """The EHR's launcher: sign in, choose the app and the patient; the app's launch URL."""
        response = self.http.get(f"{self.origin}/oauth/launcher")
        form = self._form(response)
        if form.value("step") == "login":
            response = self._submit(response, form, form.fill(self.credentials))
            form = self._form(response)
        response = self._submit(response, form, form.fill({"client_id": client_id, "patient": patient}))
        assert response.status_code == 303, response.text
        return response.headers["location"]

    def _form(self, response: httpx.Response) -> Form:
        """The page's form that acts (a POST); its messages in the error when there is none."""
        assert response.headers.get("content-type", "").startswith("text/html"), (response.status_code, response.text)
        parser = _Forms()
        parser.feed(response.text)
        posts = [f for f in parser.forms if f.method == "post"]
        assert posts, f"{response.status_code}: no form on the page: {' / '.join(parser.text)}"
        return posts[-1]

    def _submit(self, page: httpx.Response, form: Form, pairs: list[tuple[str, str]]) -> httpx.Response:
        return self.http.post(urljoin(str(page.url), form.action), content=urlencode(pairs),
                              headers={"Content-Type": _FORM})


_FORM = "application/x-www-form-urlencoded"


# -- the deployment --------------------------------------------------------------------------------

PATIENT, OTHER_PATIENT, PRACTITIONER = "peter", "olive", "jones"
_OBS = "http://terminology.hl7.org/CodeSystem/observation-category"
_CONDITION = "http://terminology.hl7.org/CodeSystem/condition-category"
_US_CORE = "http://hl7.org/fhir/us/core/CodeSystem/"
# The (g)(10) sub-resource categories [checklist SCOPE-04]: code -> code system
OBSERVATION_CATEGORIES = {"laboratory": _OBS, "social-history": _OBS, "vital-signs": _OBS, "survey": _OBS,
                          "sdoh": _US_CORE + "us-core-category", "clinical-test": _US_CORE + "us-core-category"}
CONDITION_CATEGORIES = {"encounter-diagnosis": _CONDITION, "problem-list-item": _CONDITION,
                        "health-concern": _US_CORE + "condition-category"}
# Types with a patient search parameter that the record holds, for "every granted type is searchable"
RECORD_TYPES = ("AllergyIntolerance", "CarePlan", "CareTeam", "Condition", "Device", "DiagnosticReport",
                "DocumentReference", "Encounter", "Goal", "Immunization", "MedicationRequest", "Observation",
                "Procedure")


def records() -> list[dict[str, Any]]:
    """Two patients; Peter has one resource of each record type and one Observation and Condition
    per (g)(10) category; Olive has a laboratory Observation and a problem."""
    def concept(system: str, code: str) -> dict[str, Any]:
        return {"coding": [{"system": system, "code": code}]}

    peter = {"reference": f"Patient/{PATIENT}"}
    found: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": PATIENT, "name": [{"family": "Chalmers", "given": ["Peter"]}],
         "birthDate": "1974-12-25", "gender": "male"},
        {"resourceType": "Patient", "id": OTHER_PATIENT, "name": [{"family": "Other", "given": ["Olive"]}]},
        {"resourceType": "Practitioner", "id": PRACTITIONER, "name": [{"family": "Jones"}]},
        {"resourceType": "AllergyIntolerance", "id": "peter-allergy", "patient": peter,
         "code": concept("http://snomed.info/sct", "91936005")},
        {"resourceType": "CarePlan", "id": "peter-plan", "status": "active", "intent": "plan", "subject": peter},
        {"resourceType": "CareTeam", "id": "peter-team", "subject": peter},
        {"resourceType": "Device", "id": "peter-device", "patient": peter},
        {"resourceType": "DiagnosticReport", "id": "peter-report", "status": "final", "subject": peter,
         "code": concept("http://loinc.org", "58410-2")},
        {"resourceType": "DocumentReference", "id": "peter-note", "status": "current", "subject": peter,
         "content": [{"attachment": {"contentType": "text/plain", "data": "bm90ZQ=="}}]},
        {"resourceType": "Encounter", "id": "peter-visit", "status": "finished", "subject": peter,
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}},
        {"resourceType": "Goal", "id": "peter-goal", "lifecycleStatus": "active", "subject": peter,
         "description": {"text": "walk daily"}},
        {"resourceType": "Immunization", "id": "peter-flu", "status": "completed", "patient": peter,
         "vaccineCode": concept("http://hl7.org/fhir/sid/cvx", "140"), "occurrenceDateTime": "2024-10-01"},
        {"resourceType": "MedicationRequest", "id": "peter-rx", "status": "active", "intent": "order",
         "subject": peter, "medicationCodeableConcept": concept("http://www.nlm.nih.gov/research/umls/rxnorm", "1")},
        {"resourceType": "Procedure", "id": "peter-procedure", "status": "completed", "subject": peter},
        {"resourceType": "Observation", "id": "olive-laboratory", "status": "final",
         "category": [concept(_OBS, "laboratory")], "code": concept("http://loinc.org", "718-7"),
         "subject": {"reference": f"Patient/{OTHER_PATIENT}"}},
        {"resourceType": "Condition", "id": "olive-problem-list-item", "code": concept("http://snomed.info/sct", "1"),
         "category": [concept(_CONDITION, "problem-list-item")], "subject": {"reference": f"Patient/{OTHER_PATIENT}"}},
    ]
    found += [{"resourceType": "Observation", "id": f"peter-{code}", "status": "final", "subject": peter,
               "category": [concept(system, code)], "code": concept("http://loinc.org", "8867-4")}
              for code, system in OBSERVATION_CATEGORIES.items()]
    found += [{"resourceType": "Condition", "id": f"peter-{code}", "subject": peter,
               "category": [concept(system, code)], "code": concept("http://snomed.info/sct", "44054006")}
              for code, system in CONDITION_CATEGORIES.items()]
    return found



@dataclass(frozen=True)
class Deployment:
    """A served home with :data:`USERS`, :data:`APPS` and :func:`records`."""

    base: str
    home: Path
    apps: dict[str, App]
    database_url: str | None = None

    @property
    def verify(self) -> ssl.SSLContext:
        return client_context(self.home, None)

    @cached_property
    def oauth(self) -> OAuth:
        return OAuth(self.base, self.verify)

    @cached_property
    def http(self) -> httpx.Client:
        """No client certificate: a bearer token is the only credential."""
        return httpx.Client(base_url=self.base + "/", verify=self.verify, timeout=30)

    def browser(self, username: str = "peter") -> Browser:
        return Browser(self.base, self.verify, username)

    def authorize(
        self, app: str, scope: str, consent: Consent = Consent(), *, browser: Browser | None = None,
        post: bool = False, launch: str | None = None, aud: str | None = None,
    ) -> tuple[AuthzRequest, Outcome]:
        """The app asks, a person (Peter unless ``browser`` is someone else's) answers."""
        request = self.oauth.request(self.apps[app], scope, launch=launch, aud=aud)
        if browser is not None:
            return request, browser.authorize(request.url, consent, post=post)
        with self.browser() as peter:
            return request, peter.authorize(request.url, consent, post=post)

    def tokens(self, app: str, scope: str, consent: Consent = Consent(), **options: Any) -> dict[str, Any]:
        """A completed launch: the token response, which must be a success."""
        request, outcome = self.authorize(app, scope, consent, **options)
        assert "code" in outcome.params, outcome.redirect
        answer = self.oauth.exchange(self.apps[app], outcome.params["code"], request.pkce.verifier)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def get(self, path: str, token: str | None, **params: str) -> httpx.Response:
        headers = {"Accept": "application/fhir+json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        return self.http.get(path, params=params, headers=headers)

    def ids(self, path: str, token: str, **params: str) -> set[str]:
        """The ids a search returns (one page is the whole answer here)."""
        found = self.get(path, token, **params)
        assert found.status_code == 200, found.text
        entries = found.json().get("entry", [])
        return {e["resource"]["id"] for e in entries if e.get("search", {}).get("mode") != "outcome"}

    def close(self) -> None:
        for name in ("oauth", "http"):
            if name in self.__dict__:
                client = self.__dict__[name]
                (client.http if isinstance(client, OAuth) else client).close()


# name -> (auth method, scopes the app may be granted, extra ``ehr clients add`` arguments)
APPS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "standalone": ("client_secret_basic", "launch/patient openid fhirUser profile offline_access patient/*.cruds",
                   ("--redirect-uri", REDIRECT)),
    "public": ("none", "launch/patient openid fhirUser offline_access patient/*.rs", ("--redirect-uri", REDIRECT)),
    "asymmetric": ("private_key_jwt", "launch/patient openid fhirUser offline_access patient/*.rs",
                   ("--redirect-uri", REDIRECT)),
    "ehr": ("client_secret_basic", "launch openid fhirUser offline_access online_access user/*.rs patient/*.rs",
            ("--redirect-uri", REDIRECT, "--launch-uri", LAUNCH_URI)),
    "backend": ("private_key_jwt", "system/*.rs", ("--grant-types", "client_credentials")),
}
# username -> (role, fhir_user). The patient's app reaches their own record through patient/ scopes only.
USERS = {"peter": ("patient", f"Patient/{PATIENT}"),
         "dr.jones": ("clinician", f"Practitioner/{PRACTITIONER}")}


@contextmanager
def deploy(home: Path, database_url: str | None = None) -> Iterator[Deployment]:
    """``ehr init``, the records, the users and the apps; then the server, until the block ends."""
    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([*EHR, *args], env=environment(home, database_url), input=stdin,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("init")
    loaded = home.parent / "records.ndjson"
    loaded.write_text("".join(json.dumps(r) + "\n" for r in records()))
    run("import", str(loaded))
    for username, (role, fhir_user) in USERS.items():
        run("users", "add", "--username", username, "--name", username.title(), "--role", role,
            "--fhir-user", fhir_user, "--password-stdin", stdin=PASSWORD + "\n")
    apps = {name: _register(home, run, name, *spec) for name, spec in APPS.items()}
    with running_server(home, database_url) as base:
        deployment = Deployment(base, home, apps, database_url)
        try:
            yield deployment
        finally:
            deployment.close()


def _register(home: Path, run: Callable[..., str], name: str, method: str, scopes: str,
              extra: tuple[str, ...]) -> App:
    args = ["clients", "add", "--name", name, "--scopes", scopes, "--auth-method", method, *extra]
    key = kid = None
    if method == "private_key_jwt":
        key, jwks = make_client_key("RS384")
        kid = jwks["keys"][0]["kid"]
        (home / f"{name}.jwks.json").write_text(json.dumps(jwks))
        args += ["--jwks", str(home / f"{name}.jwks.json")]
    out = run(*args)
    secret = next((line.split("=", 1)[1].split()[0] for line in out.splitlines() if line.startswith("client_secret=")),
                  None)
    return App(out.split()[0], method, secret, key, kid, REDIRECT)

