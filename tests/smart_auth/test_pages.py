"""The authorization server's pages: the ids a browser drives them by, escaping of every value,
plain-words scopes, and a Content-Security-Policy that admits the one inline style and nothing else."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smart_auth.pages import (
    STYLE,
    access_page,
    consent_page,
    describe_scope,
    launcher_page,
    login_page,
    logout_page,
    message_page,
    patient_picker_page,
    security_headers,
)

_VOID = frozenset({"input", "meta", "br", "img", "link", "hr"})
_TAGS = frozenset({
    "html", "head", "meta", "title", "style", "body", "main", "h1", "p", "strong", "form", "input", "label",
    "button", "fieldset", "legend", "ul", "li", "span", "code", "div", "select", "option",
})


@dataclass(eq=False)
class Element:
    tag: str
    attrs: dict[str, str | None]
    parent: Element | None
    text: str = ""

    def inside(self, tag: str) -> Element | None:
        """The nearest enclosing ``tag``."""
        ancestor = self.parent
        while ancestor is not None and ancestor.tag != tag:
            ancestor = ancestor.parent
        return ancestor

    @property
    def form(self) -> Element | None:
        return self.inside("form")


@dataclass
class Page:
    elements: list[Element] = field(default_factory=list)

    def by_id(self, id_: str) -> Element:
        found = [e for e in self.elements if e.attrs.get("id") == id_]
        assert len(found) == 1, f"{len(found)} elements with id {id_!r}"
        return found[0]

    def all(self, tag: str, **attrs: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag and all(e.attrs.get(k) == v for k, v in attrs.items())]

    def label_for(self, id_: str) -> str:
        (label,) = self.all("label", **{"for": id_})
        return label.text

    def hidden(self, form: Element) -> list[tuple[str | None, str | None]]:
        """The hidden fields ``form`` carries along (its direct children)."""
        return [(e.attrs["name"], e.attrs["value"]) for e in self.all("input", type="hidden") if e.parent is form]


class _Parser(HTMLParser):
    """Builds the element list, and fails on anything that is not well nested."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs), self.open[-1] if self.open else None)
        assert len(element.attrs) == len(attrs), f"repeated attribute on <{tag}>"
        self.page.elements.append(element)
        if tag not in _VOID:
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1].tag == tag, f"</{tag}> closes {self.open[-1].tag if self.open else None}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element.text += data


def parse(html: str) -> Page:
    assert html.startswith("<!DOCTYPE html>\n")
    parser = _Parser()
    parser.feed(html)
    parser.close()
    assert not parser.open, "unclosed elements"
    page = parser.page
    assert not page.all("script")
    assert {e.tag for e in page.elements} <= _TAGS
    assert page.all("html")[0].attrs == {"lang": "en"}
    (style,) = page.all("style")
    assert style.text == STYLE
    return page


def the_form(page: Page, method: str) -> Element:
    (form,) = page.all("form", method=method)
    return form


HIDDEN = {"client_id": "growth-chart", "state": "af0ifjsldkj", "redirect_uri": "https://app.example/cb?a=1&b=2"}


# --- the fields a browser test drives --------------------------------------------------------------


def test_login_page_fields() -> None:
    page = parse(login_page(action="/authorize/login", csrf="tok", hidden=HIDDEN, username="alice"))
    form = the_form(page, "post")
    assert form.attrs["action"] == "/authorize/login"
    username, password = page.by_id("username"), page.by_id("password")
    assert [username.attrs[k] for k in ("name", "value", "autocomplete")] == ["username", "alice", "username"]
    assert password.attrs["type"] == "password" and password.attrs["name"] == "password"
    assert password.attrs["autocomplete"] == "current-password"
    assert "value" not in password.attrs
    assert page.label_for("username") and page.label_for("password")
    assert sorted(page.hidden(form)) == sorted([("csrf", "tok"), *HIDDEN.items()])
    assert page.by_id("sign-in").attrs["type"] == "submit"
    assert page.by_id("sign-in").form is form
    assert not [e for e in page.elements if e.attrs.get("role") == "alert"]


def test_login_error_is_an_alert() -> None:
    page = parse(login_page(action="/login", csrf="tok", hidden={}, error="Wrong username or password."))
    (alert,) = [e for e in page.elements if e.attrs.get("role") == "alert"]
    assert alert.tag == "p" and alert.text == "Wrong username or password."


def test_patient_picker_fields() -> None:
    patients = [("p1", "Jo Bloggs (1970-01-01)"), ("p-2", "Ann Smith")]
    page = parse(patient_picker_page(
        action="/authorize/patient", csrf="tok", hidden=HIDDEN, patients=patients, query="smi", client_name="Growth"
    ))
    search, choose = the_form(page, "get"), the_form(page, "post")
    assert search.attrs["action"] == choose.attrs["action"] == "/authorize/patient"
    q = page.by_id("q")
    assert (q.attrs["name"], q.attrs["value"], q.form) == ("q", "smi", search)
    assert page.label_for("q")
    assert page.by_id("find").form is search
    assert sorted(page.hidden(search)) == sorted(HIDDEN.items())  # no csrf token in a URL
    assert sorted(page.hidden(choose)) == sorted([("csrf", "tok"), *HIDDEN.items()])
    for pid, display in patients:
        radio = page.by_id(f"patient-{pid}")
        assert (radio.attrs["type"], radio.attrs["name"], radio.attrs["value"]) == ("radio", "patient", pid)
        assert radio.form is choose
        assert page.label_for(f"patient-{pid}") == display
    assert page.by_id("choose").form is choose
    assert "No matching patients" not in page.all("main")[0].text


def test_patient_picker_without_matches() -> None:
    page = parse(patient_picker_page(action="/p", csrf="t", hidden={}, patients=[], query="zz", client_name="App"))
    assert "No matching patients" in page.all("main")[0].text
    assert not page.all("input", type="radio")
    page.by_id("find")


REQUIRED = {"openid", "fhirUser", "launch", "launch/patient", "launch/encounter"}
SCOPES = ["openid", "fhirUser", "launch/patient", "patient/Observation.rs", "patient/Condition.rs", "offline_access"]


def test_consent_page_fields() -> None:
    page = parse(consent_page(
        action="/authorize/consent", csrf="tok", hidden=HIDDEN, client_name="Growth Chart",
        user_display="Dr Alice Jones", patient_display="Jo Bloggs", scopes=SCOPES,
    ))
    form = the_form(page, "post")
    assert form.attrs["action"] == "/authorize/consent"
    assert page.all("legend")[0].text == "Growth Chart asks to:"
    main = page.all("main")[0].text
    assert "Dr Alice Jones" in main and "Jo Bloggs" in main
    assert [e.attrs["value"] for e in page.all("input", type="checkbox")] == SCOPES[3:]
    for n, scope in enumerate(SCOPES[3:], start=3):
        box = page.by_id(f"scope-{n}")
        assert box.attrs["name"] == "scope" and "checked" in box.attrs and box.form is form
        (label,) = page.all("label", **{"for": f"scope-{n}"})
        assert label.text == f"{describe_scope(scope)} {scope}"
    assert [e.text for e in page.all("code")] == SCOPES
    required = page.all("input", type="hidden", name="scope")
    assert [e.attrs["value"] for e in required] == SCOPES[:3]
    assert all(e.form is form for e in required)
    for scope in SCOPES[:3]:
        assert describe_scope(scope) in main
    notice = page.by_id("offline-notice")
    assert notice.attrs["role"] == "note"
    assert "sign out" in notice.text and "administrator" in notice.text
    approve, deny = page.by_id("approve"), page.by_id("deny")
    assert (approve.attrs["name"], approve.attrs["value"], approve.attrs["type"]) == ("decision", "approve", "submit")
    assert (deny.attrs["name"], deny.attrs["value"], deny.attrs["type"]) == ("decision", "deny", "submit")
    assert approve.form is deny.form is form
    assert sorted(page.hidden(form)) == sorted([("csrf", "tok"), *HIDDEN.items()])


def test_consent_without_offline_access_has_no_notice() -> None:
    page = parse(consent_page(
        action="/c", csrf="t", hidden={}, client_name="App", user_display="Jo", patient_display=None,
        scopes=["openid", "patient/*.rs"],
    ))
    assert not [e for e in page.elements if e.attrs.get("id") == "offline-notice"]
    assert page.label_for("scope-1").endswith("in the selected patient's record patient/*.rs")


def test_consent_for_a_patient_reading_their_own_record() -> None:
    page = parse(consent_page(
        action="/c", csrf="t", hidden={}, client_name="App", user_display="Jo", patient_display="Jo",
        scopes=["patient/*.rs"], own_record=True,
    ))
    assert page.label_for("scope-0").startswith("read and search all types of data in your record")


def test_launcher_page_fields() -> None:
    apps, patients = [("growth", "Growth Chart"), ("meds", "Meds")], [("p1", "Jo Bloggs"), ("p2", "Ann Smith")]
    page = parse(launcher_page(action="/launch", csrf="tok", apps=apps, patients=patients, user_display="Dr A"))
    form = the_form(page, "post")
    assert form.attrs["action"] == "/launch" and page.hidden(form) == [("csrf", "tok")]
    for id_, choices in (("client_id", apps), ("patient", patients)):
        select = page.by_id(id_)
        assert (select.tag, select.attrs["name"], select.form) == ("select", id_, form)
        assert page.label_for(id_)
        options = [e for e in page.all("option") if e.parent is select]
        assert [(e.attrs["value"], e.text) for e in options] == list(choices)
    assert page.by_id("launch").form is form


def test_logout_page_fields() -> None:
    page = parse(logout_page(action="/oauth/logout", csrf="c-1"))
    form = the_form(page, "post")
    assert form.attrs["action"] == "/oauth/logout"
    assert_carries(page, form, "c-1", {})
    assert [b.attrs.get("id") for b in page.all("button")] == ["sign-out"]


def test_message_page() -> None:
    page = parse(message_page("Signed out", "You have signed out."))
    assert page.all("title")[0].text == page.all("h1")[0].text == "Signed out"
    assert page.all("p")[0].text == "You have signed out."
    assert not page.all("form")


# --- headers -----------------------------------------------------------------------------------------


def test_csp_pins_the_style_by_hash() -> None:
    digest = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode()
    headers = security_headers()
    directives = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    assert directives == {
        "default-src": "'none'",
        "style-src": f"'sha256-{digest}'",
        "img-src": "'self' data:",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
    }
    assert headers | {
        "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store", "Pragma": "no-cache",
    } == headers


def test_form_targets_join_form_action() -> None:
    csp = security_headers(("https://app.example:9000", "http://[::1]:8080", "com.example.app:"))
    assert "; form-action 'self' https://app.example:9000 http://[::1]:8080 com.example.app:; " in (
        csp["Content-Security-Policy"]
    )


@pytest.mark.parametrize(
    "target", ["https://a.example; script-src *", "https://a.example\r\nSet-Cookie: x=1", "*", "", "'unsafe-inline'"]
)
def test_form_targets_that_are_not_origins_are_refused(target: str) -> None:
    with pytest.raises(ValueError):
        security_headers((target,))


# --- every value is escaped --------------------------------------------------------------------------

NASTY = ["<script>alert(1)</script>", '"', "'", "&", "&amp;", "&#60;", "\r\n", "\r", "<!--", "]]>", "</form>", "<"]
texts = st.text() | st.lists(st.sampled_from(NASTY) | st.text(max_size=4), max_size=6).map("".join)
hidden_items = st.dictionaries(texts, texts, max_size=4)
pairs = st.lists(st.tuples(texts, texts), max_size=4, unique_by=lambda p: p[0])


def assert_carries(page: Page, form: Element, csrf: str | None, hidden: Mapping[str, str]) -> None:
    expected = [("csrf", csrf)] if csrf is not None else []
    assert sorted(page.hidden(form)) == sorted(expected + list(hidden.items()))


def test_carriage_returns_survive_newline_normalisation() -> None:
    # Browsers turn a literal CR LF into LF before parsing; a character reference is left alone.
    html = login_page(action="/login", csrf="t", hidden={"state": "a\r\nb"})
    assert 'value="a&#13;\nb"' in html
    page = parse(html)
    assert ("state", "a\r\nb") in page.hidden(the_form(page, "post"))


@given(action=texts, csrf=texts, hidden=hidden_items, error=texts, username=texts)
def test_login_page_escapes(action: str, csrf: str, hidden: dict[str, str], error: str, username: str) -> None:
    page = parse(login_page(action=action, csrf=csrf, hidden=hidden, error=error, username=username))
    form = the_form(page, "post")
    assert form.attrs["action"] == action
    assert_carries(page, form, csrf, hidden)
    assert page.by_id("username").attrs["value"] == username
    (alert,) = [e for e in page.elements if e.attrs.get("role") == "alert"]
    assert alert.text == error


@given(action=texts, csrf=texts, hidden=hidden_items, patients=pairs, query=texts, client_name=texts)
def test_patient_picker_escapes(
    action: str, csrf: str, hidden: dict[str, str], patients: list[tuple[str, str]], query: str, client_name: str
) -> None:
    page = parse(patient_picker_page(
        action=action, csrf=csrf, hidden=hidden, patients=patients, query=query, client_name=client_name
    ))
    assert page.by_id("q").attrs["value"] == query
    search = the_form(page, "get")
    assert search.attrs["action"] == action
    assert_carries(page, search, None, hidden)
    for pid, display in patients:
        radio = page.by_id(f"patient-{pid}")
        assert radio.attrs["value"] == pid
        assert page.label_for(f"patient-{pid}") == display
    if patients:
        assert_carries(page, the_form(page, "post"), csrf, hidden)
        assert client_name in page.all("legend")[0].text


@given(
    action=texts, csrf=texts, hidden=hidden_items, client_name=texts, user_display=texts,
    patient_display=texts, scopes=st.lists(texts | st.sampled_from(SCOPES), max_size=5),
)
def test_consent_page_escapes(
    action: str, csrf: str, hidden: dict[str, str], client_name: str, user_display: str, patient_display: str,
    scopes: list[str],
) -> None:
    page = parse(consent_page(
        action=action, csrf=csrf, hidden=hidden, client_name=client_name, user_display=user_display,
        patient_display=patient_display, scopes=scopes,
    ))
    form = the_form(page, "post")
    assert form.attrs["action"] == action
    assert_carries(page, form, csrf, hidden)
    assert page.all("legend")[0].text == f"{client_name} asks to:"
    assert [e.text for e in page.all("strong")][:2] == [user_display, patient_display]
    required = [e.attrs["value"] for e in page.all("input", type="hidden", name="scope")]
    assert required == [scope for scope in scopes if scope in REQUIRED]
    for n, scope in enumerate(scopes):
        if scope not in REQUIRED:
            assert page.by_id(f"scope-{n}").attrs["value"] == scope
            assert page.label_for(f"scope-{n}") == f"{describe_scope(scope)} {scope}"


@given(action=texts, csrf=texts, apps=pairs, patients=pairs, user_display=texts)
def test_launcher_page_escapes(
    action: str, csrf: str, apps: list[tuple[str, str]], patients: list[tuple[str, str]], user_display: str
) -> None:
    page = parse(launcher_page(action=action, csrf=csrf, apps=apps, patients=patients, user_display=user_display))
    assert the_form(page, "post").attrs["action"] == action
    assert [(e.attrs["value"], e.text) for e in page.all("option")] == apps + patients
    assert page.all("strong")[0].text == user_display


@given(action=texts, csrf=texts, user_display=texts, grant=texts, app=texts, since=texts)
def test_access_page_escapes(action: str, csrf: str, user_display: str, grant: str, app: str, since: str) -> None:
    page = parse(access_page(action=action, csrf=csrf, user_display=user_display,
                             grants=[(grant, app, "patient/*.rs", since)]))
    form = the_form(page, "post")
    assert form.attrs["action"] == action and page.hidden(form) == [("csrf", csrf), ("grant", grant)]
    assert [e.text for e in page.all("strong")] == [user_display, app]


@given(title=texts, text=texts)
def test_message_page_escapes(title: str, text: str) -> None:
    page = parse(message_page(title, text))
    assert page.all("title")[0].text == page.all("h1")[0].text == title
    assert page.all("p")[0].text == text


# --- scopes in plain words ---------------------------------------------------------------------------

OBSERVATIONS = "observations (lab results, vital signs and other measurements)"


@pytest.mark.parametrize(
    ("scope", "words"),
    [
        ("patient/Observation.read", f"read and search {OBSERVATIONS} in the selected patient's record"),
        ("user/*.write", "create new, update and delete all types of data in records you can access"),
        ("patient/*.*",
         "create new, read, update, delete and search all types of data in the selected patient's record"),
        ("patient/Observation.rs", f"read and search {OBSERVATIONS} in the selected patient's record"),
        ("user/Condition.cruds",
         "create new, read, update, delete and search conditions (problems and diagnoses) in records you can access"),
        ("user/MedicationRequest.r", "read medication orders in records you can access"),
        ("patient/AllergyIntolerance.cu", "create new and update allergies in the selected patient's record"),
        ("user/Patient.s", "search demographics (name, birth date, contact details) in records you can access"),
        ("system/Encounter.rs", "read and search visits and hospital stays in all records on this server"),
        ("system/ServiceRequest.d", "delete service requests in all records on this server"),
        ("user/ImagingStudy.rs", "read and search imaging studies in records you can access"),
        ("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
         f"read and search {OBSERVATIONS} in the selected patient's record, only those with category laboratory"),
        ("patient/Observation.rs?category=http%3A%2F%2Fterminology.hl7.org%2FCodeSystem%2Fobservation-category"
         "%7Cvital-signs",
         f"read and search {OBSERVATIONS} in the selected patient's record, only those with category vital-signs"),
        ("patient/Observation.rs?category=laboratory,vital-signs&status=final",
         f"read and search {OBSERVATIONS} in the selected patient's record, "
         "only those with category laboratory or vital-signs and status final"),
        ("openid", "know who you are (your name and user id)"),
        ("fhirUser", "know who you are (your name and user id)"),
        ("launch", "receive the context the EHR launched it in"),
        ("launch/patient", "ask you to select a patient"),
        ("offline_access", "keep access after you sign out, until you revoke it"),
        ("online_access", "keep access while you stay signed in"),
        ("email", "email (not recognised)"),
        ("patient/Observation.sr", "patient/Observation.sr (not recognised)"),
        ("patient/observation.rs", "patient/observation.rs (not recognised)"),
        ("patient/Observation.rs?category", "patient/Observation.rs?category (not recognised)"),
        ("", " (not recognised)"),
    ],
)
def test_describe_scope(scope: str, words: str) -> None:
    assert describe_scope(scope) == words


def test_describe_scope_for_ones_own_record() -> None:
    assert describe_scope("patient/Goal.r", own_record=True) == "read health goals in your record"


@pytest.mark.parametrize("scope", ["profile", "launch/encounter"])
def test_describe_scope_other_known_scopes(scope: str) -> None:
    assert "not recognised" not in describe_scope(scope)


scope_like = st.from_regex(r"(patient|user|system)/[A-Za-z*]{0,20}\.[a-z*]{0,6}(\?.{0,30})?", fullmatch=True)


@given(st.text() | scope_like)
def test_describe_scope_never_raises(scope: str) -> None:
    assert describe_scope(scope)
