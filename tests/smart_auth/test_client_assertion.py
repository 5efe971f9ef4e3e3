"""TOK-09 / BS-01: the token endpoint authenticates asymmetric and Backend Services clients by a
signed assertion (RFC 7523 private_key_jwt; SMART App Launch 2.x "Client Authentication: Asymmetric").

Keys are generated once per module; the clock is fixed. JWKS URLs are served by a real HTTP server
on 127.0.0.1, or by httpx.MockTransport where no socket may be touched.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwk

from ehr.db.database import Database, SqliteDatabase, open_database
from ehr.db.engine import ensure_schema
from smart_auth.client_assertion import (
    ALGORITHMS,
    ClientKeys,
    InvalidClientAssertion,
    JtiStore,
    JwksFetcher,
    verify_client_assertion,
)
from tests.smart_auth.jwt_helpers import make_assertion, make_client_key

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TOKEN_ENDPOINT = "https://ehr.test/auth/token"
CLIENT = "bulk-export-client"
KID = "client-key-1"

Lookup = Callable[[str], Awaitable[ClientKeys | None]]


@cache
def client_key(alg: str, kid: str = KID) -> tuple[jwk.Key, dict[str, Any]]:
    return make_client_key(alg, kid=kid)


def assertion_for(alg: str = "RS384", **overrides: Any) -> str:
    options: dict[str, Any] = {"kid": KID, "client_id": CLIENT, "audience": TOKEN_ENDPOINT, "alg": alg, "now": NOW}
    options.update(overrides)
    key = options.pop("key") if "key" in options else client_key(alg)[0]
    return make_assertion(key, **options)


def clients(registered: dict[str, ClientKeys]) -> Lookup:
    async def lookup(client_id: str) -> ClientKeys | None:
        return registered.get(client_id)

    return lookup


def inline(*algs: str) -> Lookup:
    keys = [k for alg in algs for k in client_key(alg)[1]["keys"]]
    return clients({CLIENT: ClientKeys(jwks={"keys": keys})})


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'jti.sqlite3'}"
    await ensure_schema(url)
    database = open_database(url)
    yield database
    await database.close()


@pytest.fixture
def jti_store(sqlite_db: Database) -> JtiStore:
    return JtiStore(sqlite_db)


class Ticker:
    """The fetcher's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


@pytest.fixture
async def fetcher(ticker: Ticker) -> AsyncIterator[JwksFetcher]:
    fetcher = JwksFetcher(clock=ticker, timeout=5.0)
    yield fetcher
    await fetcher.aclose()


async def verify(
    assertion: str, lookup: Lookup, jti_store: JtiStore, fetcher: JwksFetcher, now: float = NOW
) -> str:
    return await verify_client_assertion(
        assertion, token_endpoint=TOKEN_ENDPOINT, client_keys=lookup, fetcher=fetcher, jti_store=jti_store, now=now
    )


# -- accepted ------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_tok09_each_algorithm_authenticates(alg: str, jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    assert await verify(assertion_for(alg), inline(alg), jti_store, fetcher) == CLIENT


async def test_tok09_audience_may_be_a_list_holding_the_token_endpoint(
    jti_store: JtiStore, fetcher: JwksFetcher
) -> None:
    token = assertion_for(audience=["https://other.test/token", TOKEN_ENDPOINT])
    assert await verify(token, inline("RS384"), jti_store, fetcher) == CLIENT


async def test_tok09_key_chosen_by_kid_and_kty_among_several(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    # an RSA and an EC key share the kid: the alg says which one is meant
    assert await verify(assertion_for("ES384"), inline("RS384", "ES384"), jti_store, fetcher) == CLIENT


# -- refused: the JWS and its header -------------------------------------------------------------


async def refused(token: str, lookup: Lookup, jti_store: JtiStore, fetcher: JwksFetcher, match: str) -> None:
    with pytest.raises(InvalidClientAssertion, match=match):
        await verify(token, lookup, jti_store, fetcher)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def good_claims(jti: str = "jti-1") -> dict[str, Any]:
    return {"iss": CLIENT, "sub": CLIENT, "aud": TOKEN_ENDPOINT, "exp": int(NOW + 240), "jti": jti}


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "....", "é.é.é", "!!.??.**"])
async def test_tok09_not_a_compact_jws_refused(token: str, jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    await refused(token, inline("RS384"), jti_store, fetcher, "compact JWS")


@pytest.mark.parametrize("alg", ["none", "HS256", "RS512", "PS384", "EdDSA", "ES512"])
async def test_tok09_algorithm_outside_the_allowed_list_refused(
    alg: str, jti_store: JtiStore, fetcher: JwksFetcher
) -> None:
    token = unsigned({"alg": alg, "kid": KID, "typ": "JWT"}, good_claims(), b"\x00" * 32)
    await refused(token, inline("RS384"), jti_store, fetcher, "alg must be one of")


async def test_tok09_alg_none_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    token = unsigned({"alg": "none", "kid": KID, "typ": "JWT"}, good_claims())
    await refused(token, inline("RS384"), jti_store, fetcher, "alg must be one of")


async def test_tok09_hs256_signed_with_the_public_key_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    """Algorithm confusion: an attacker MACs with the client's public key, hoping it is taken as a secret."""
    key = client_key("RS384")[0]
    assert isinstance(key, jwk.RSAKey)
    public_pem = key.as_pem(private=False)
    signing_input = unsigned({"alg": "HS256", "kid": KID, "typ": "JWT"}, good_claims()).rsplit(".", 1)[0]
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    await refused(f"{signing_input}.{b64(mac)}", inline("RS384"), jti_store, fetcher, "alg must be one of")


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({"kid": None}, "kid is required"),
        ({"kid": ""}, "kid is required"),
        ({"typ": "at+jwt"}, "typ"),
        ({"crit": ["typ"]}, "crit"),
    ],
)
async def test_tok09_bad_header_refused(
    headers: dict[str, Any], match: str, jti_store: JtiStore, fetcher: JwksFetcher
) -> None:
    await refused(assertion_for(headers=headers), inline("RS384"), jti_store, fetcher, match)


async def test_tok09_jku_that_is_not_a_string_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    token = unsigned({"alg": "RS384", "kid": KID, "jku": 7}, good_claims(), b"\x00" * 256)
    await refused(token, inline("RS384"), jti_store, fetcher, "jku must be a URL")


async def test_tok09_missing_kid_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    await refused(assertion_for(kid=None), inline("RS384"), jti_store, fetcher, "kid is required")


# -- refused: keys -------------------------------------------------------------------------------


async def test_tok09_unknown_client_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    token = assertion_for(client_id="someone-else")
    await refused(token, inline("RS384"), jti_store, fetcher, "not a registered client")


async def test_tok09_client_without_keys_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    await refused(assertion_for(), clients({CLIENT: ClientKeys()}), jti_store, fetcher, "no registered JWKS")


async def test_tok09_two_keys_with_the_same_kid_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    _, other = make_client_key("RS384", kid=KID)
    keys = client_key("RS384")[1]["keys"] + other["keys"]
    lookup = clients({CLIENT: ClientKeys(jwks={"keys": keys})})
    await refused(assertion_for(), lookup, jti_store, fetcher, "more than one key")


@pytest.mark.parametrize(
    ("registered", "alg"),
    [
        ("RS384", "ES384"),  # kid names an RSA key, the header says EC
        ("ES256", "ES384"),  # EC, but P-256 where ES384 needs P-384
        ("ES384", "RS384"),
    ],
)
async def test_tok09_key_whose_kty_does_not_fit_alg_refused(
    registered: str, alg: str, jti_store: JtiStore, fetcher: JwksFetcher
) -> None:
    await refused(assertion_for(alg), inline(registered), jti_store, fetcher, "no key .* fits alg")


async def test_tok09_key_registered_for_another_alg_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    # the registered key says alg RS256; an RS384 assertion signed with it is refused
    key, jwks = client_key("RS256")
    await refused(
        assertion_for("RS384", key=key), clients({CLIENT: ClientKeys(jwks=jwks)}), jti_store, fetcher, "fits alg"
    )


async def test_tok09_unknown_kid_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    await refused(assertion_for(kid="rotated-away"), inline("RS384"), jti_store, fetcher, "no key .* has this kid")


async def test_tok09_weak_rsa_key_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.warns(Warning):  # joserfc warns about the key size when it is imported to sign
        key = jwk.RSAKey.import_key(weak, parameters={"kid": KID})
    lookup = clients({CLIENT: ClientKeys(jwks={"keys": [key.as_dict(private=False)]})})
    await refused(assertion_for("RS384", key=key), lookup, jti_store, fetcher, "too weak")


async def test_tok09_signed_by_another_key_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    impostor, _ = make_client_key("RS384", kid=KID)
    await refused(assertion_for(key=impostor), inline("RS384"), jti_store, fetcher, "signature does not verify")


async def test_tok09_tampered_payload_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    header, _, signature = assertion_for().split(".")
    claims = {**good_claims(), "sub": CLIENT, "scope": "system/*.cruds"}
    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    await refused(tampered, inline("RS384"), jti_store, fetcher, "signature does not verify")


# -- refused: claims -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"audience": "https://ehr.test/auth/token/"}, "aud is not this token endpoint"),
        ({"audience": ["https://other.test/token"]}, "aud is not this token endpoint"),
        ({"claims": {"sub": "another-client"}}, "sub must equal iss"),
        ({"claims": {"sub": None}}, "sub must equal iss"),
        ({"exp_in": -31}, "expired"),
        ({"exp_in": 300 + 31}, "more than 300 seconds ahead"),
        ({"claims": {"exp": None}}, "exp is required"),
        ({"claims": {"exp": "1767225840"}}, "exp must be a NumericDate"),
        ({"claims": {"exp": True}}, "exp must be a NumericDate"),
        ({"claims": {"nbf": NOW + 31}}, "nbf is in the future"),
        ({"claims": {"iat": NOW + 31}}, "iat is in the future"),
        ({"claims": {"jti": None}}, "jti is required"),
        ({"claims": {"jti": ""}}, "jti is required"),
        ({"jti": "j" * 201}, "jti is required"),
        ({"claims": {"iss": None}}, "iss"),
    ],
)
async def test_tok09_bad_claims_refused(
    overrides: dict[str, Any], match: str, jti_store: JtiStore, fetcher: JwksFetcher
) -> None:
    await refused(assertion_for(**overrides), inline("RS384"), jti_store, fetcher, match)


async def test_tok09_five_minute_lifetime_and_leeway_accepted(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    for n, exp_in in enumerate((300 + 30, -29)):
        token = assertion_for(exp_in=exp_in, jti=f"edge-{n}", claims={"iat": NOW + 30})
        assert await verify(token, inline("RS384"), jti_store, fetcher) == CLIENT


# -- replay (both engines) -----------------------------------------------------------------------


async def test_tok09_replayed_jti_refused(db: Database, fetcher: JwksFetcher) -> None:
    store = JtiStore(db)
    token = assertion_for(jti="once")
    assert await verify(token, inline("RS384"), store, fetcher) == CLIENT
    await refused(token, inline("RS384"), store, fetcher, "already used")
    again = assertion_for(jti="once", exp_in=100)  # a new assertion cannot reuse the jti either
    await refused(again, inline("RS384"), store, fetcher, "already used")


async def test_tok09_forged_assertion_does_not_burn_the_jti(db: Database, fetcher: JwksFetcher) -> None:
    impostor, _ = make_client_key("RS384", kid=KID)
    forged = assertion_for(key=impostor, jti="legit")
    await refused(forged, inline("RS384"), JtiStore(db), fetcher, "signature")
    assert await verify(assertion_for(jti="legit"), inline("RS384"), JtiStore(db), fetcher) == CLIENT


async def test_tok09_jti_store_is_per_issuer_and_forgets_dead_assertions(db: Database) -> None:
    store, now_us = JtiStore(db), int(NOW * 1_000_000)
    expires_us = now_us + 60_000_000
    assert await store.first_use("a", "j", expires_us, now_us)
    assert not await store.first_use("a", "j", expires_us, now_us + 1)
    assert await store.first_use("b", "j", expires_us, now_us + 2)
    later = expires_us + 1  # the first assertion can no longer be accepted: its jti is free again
    assert await store.first_use("a", "j", later + 60_000_000, later)
    assert not await store.first_use("a", "j", later + 60_000_000, later + 1)


async def test_tok09_jti_store_purges_expired_rows(db: Database) -> None:
    store, now_us = JtiStore(db), int(NOW * 1_000_000)
    for n in range(3):
        assert await store.first_use("a", f"j{n}", now_us + n, now_us)
    assert await store.first_use("a", "fresh", now_us + 10**9, now_us + JtiStore.PURGE_EVERY_US + 10)
    rows = await db.fetch_all("SELECT jti FROM oauth_jti ORDER BY jti")
    assert [row["jti"] for row in rows] == ["fresh"]


# -- JWKS URLs: a real HTTP server on 127.0.0.1 --------------------------------------------------


class JwksServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _JwksHandler)
        self.status = 200
        self.body = json.dumps(client_key("RS384")[1]).encode()
        self.extra_headers: dict[str, str] = {}
        self.send_length = True
        self.hits = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/jwks.json"


class _JwksHandler(BaseHTTPRequestHandler):
    server: JwksServer

    def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
        self.server.hits += 1
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        for name, value in self.server.extra_headers.items():
            self.send_header(name, value)
        if self.server.send_length:
            self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        try:
            self.wfile.write(self.server.body)
        except ConnectionError:
            pass  # the fetcher stopped reading an oversized body

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def by_url(url: str) -> Lookup:
    return clients({CLIENT: ClientKeys(jwks_uri=url)})


async def verify_n(n: int, server: JwksServer, jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    for _ in range(n):
        assert await verify(assertion_for(), by_url(server.url), jti_store, fetcher) == CLIENT


async def test_tok09_jwks_url_cached_within_max_age(
    jwks_server: JwksServer, jti_store: JtiStore, fetcher: JwksFetcher, ticker: Ticker
) -> None:
    jwks_server.extra_headers = {"Cache-Control": "public, max-age=120"}
    await verify_n(3, jwks_server, jti_store, fetcher)
    assert jwks_server.hits == 1
    ticker.now += 119
    await verify_n(1, jwks_server, jti_store, fetcher)
    assert jwks_server.hits == 1
    ticker.now += 2  # max-age has passed
    await verify_n(1, jwks_server, jti_store, fetcher)
    assert jwks_server.hits == 2


@pytest.mark.parametrize(
    "cache_control", [None, "no-store", "no-cache", "max-age=600, no-store", "no-cache, max-age=600", "max-age=x"]
)
async def test_tok09_jwks_url_not_cached_without_permission(
    cache_control: str | None, jwks_server: JwksServer, jti_store: JtiStore, fetcher: JwksFetcher
) -> None:
    if cache_control is not None:
        jwks_server.extra_headers = {"Cache-Control": cache_control}
    await verify_n(3, jwks_server, jti_store, fetcher)
    assert jwks_server.hits == 3


async def test_tok09_jwks_url_cached_at_most_an_hour_less_its_age(
    jwks_server: JwksServer, jti_store: JtiStore, fetcher: JwksFetcher, ticker: Ticker
) -> None:
    jwks_server.extra_headers = {"Cache-Control": "max-age=86400"}
    await verify_n(1, jwks_server, jti_store, fetcher)
    ticker.now += 3601
    await verify_n(1, jwks_server, jti_store, fetcher)
    assert jwks_server.hits == 2
    jwks_server.extra_headers = {"Cache-Control": "max-age=60", "Age": "50"}
    ticker.now += 3601
    await verify_n(1, jwks_server, jti_store, fetcher)
    ticker.now += 11
    await verify_n(1, jwks_server, jti_store, fetcher)
    assert jwks_server.hits == 4


async def test_tok09_registered_jku_accepted(
    jwks_server: JwksServer, jti_store: JtiStore, fetcher: JwksFetcher
) -> None:
    token = assertion_for(headers={"jku": jwks_server.url})
    assert await verify(token, by_url(jwks_server.url), jti_store, fetcher) == CLIENT


@pytest.mark.parametrize("jku", ["{url}?k=1", "https://attacker.test/jwks.json", "{url}/"])
async def test_tok09_unregistered_jku_refused_and_never_fetched(
    jku: str, jwks_server: JwksServer, jti_store: JtiStore, fetcher: JwksFetcher
) -> None:
    token = assertion_for(headers={"jku": jku.format(url=jwks_server.url)})
    await refused(token, by_url(jwks_server.url), jti_store, fetcher, "jku is not the client's registered")
    await refused(token, inline("RS384"), jti_store, fetcher, "jku is not the client's registered")
    assert jwks_server.hits == 0


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (404, b"{}", "HTTP 404"),
        (302, b"", "HTTP 302"),  # redirects are not followed
        (200, b"<html>keys</html>", "not JSON"),
        (200, b"[1, 2]", "not a JSON object"),
        (200, b'{"keys": {}}', "no keys list"),
        (200, b'{"keys": [], "n": NaN}', "not JSON"),
    ],
)
async def test_tok09_bad_jwks_url_answer_refused(
    status: int, body: bytes, match: str, jwks_server: JwksServer, jti_store: JtiStore, fetcher: JwksFetcher
) -> None:
    jwks_server.status, jwks_server.body = status, body
    jwks_server.extra_headers = {"Cache-Control": "max-age=600", "Location": "https://attacker.test/"}
    await refused(assertion_for(), by_url(jwks_server.url), jti_store, fetcher, match)


@pytest.mark.parametrize("send_length", [True, False])
async def test_tok09_oversized_jwks_refused(
    send_length: bool, jwks_server: JwksServer, jti_store: JtiStore, ticker: Ticker
) -> None:
    jwks = client_key("RS384")[1]
    jwks_server.body = json.dumps({**jwks, "padding": "x" * 5000}).encode()
    jwks_server.send_length = send_length
    small = JwksFetcher(max_bytes=4096, clock=ticker)
    try:
        await refused(assertion_for(), by_url(jwks_server.url), jti_store, small, "larger than 4096 bytes")
    finally:
        await small.aclose()


async def test_tok09_unreachable_jwks_url_refused(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    server = JwksServer()
    url = server.url
    server.server_close()  # nothing listens on the port any more
    await refused(assertion_for(), by_url(url), jti_store, fetcher, "could not be fetched")


# -- JWKS URLs: https only (no sockets: httpx.MockTransport) -------------------------------------


@pytest.fixture
async def mocked() -> AsyncIterator[tuple[JwksFetcher, list[str]]]:
    requested: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        return httpx.Response(200, json=client_key("RS384")[1])

    fetcher = JwksFetcher(transport=httpx.MockTransport(answer))
    yield fetcher, requested
    await fetcher.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "http://ehr-client.example/jwks.json",
        "http://127.0.0.1.nip.io/jwks.json",
        "http://localhost.attacker.test/jwks.json",
        "http://127.0.0.1@attacker.test/jwks.json",
        "ftp://ehr-client.example/jwks.json",
        "file:///etc/passwd",
        "https:///jwks.json",
        "jwks.json",
        "http://[::1",
    ],
)
async def test_tok09_jwks_url_must_be_https_unless_loopback(
    url: str, jti_store: JtiStore, mocked: tuple[JwksFetcher, list[str]]
) -> None:
    fetcher, requested = mocked
    with pytest.raises(InvalidClientAssertion, match="JWKS URL"):
        await verify(assertion_for(), by_url(url), jti_store, fetcher)
    assert requested == []


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr-client.example/.well-known/jwks.json",
        "http://127.0.0.1:8123/jwks.json",
        "http://localhost/jwks.json",
        "http://[::1]:8123/jwks.json",
    ],
)
async def test_tok09_https_and_loopback_jwks_urls_fetched(
    url: str, jti_store: JtiStore, mocked: tuple[JwksFetcher, list[str]]
) -> None:
    fetcher, requested = mocked
    assert await verify(assertion_for(), by_url(url), jti_store, fetcher) == CLIENT
    assert requested == [url]


class Streamed(httpx.AsyncByteStream):
    """A body that arrives from the network (httpx reads in-memory content at construction)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


async def test_tok09_compressed_jwks_refused(jti_store: JtiStore) -> None:
    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Streamed(b"\x1f\x8b..."), headers={"Content-Encoding": "gzip"})

    fetcher = JwksFetcher(transport=httpx.MockTransport(answer))
    try:
        await refused(assertion_for(), by_url("https://c.example/jwks"), jti_store, fetcher, "content encoding")
    finally:
        await fetcher.aclose()


# -- property: no corruption of a valid assertion verifies ---------------------------------------


@pytest.fixture(scope="module")
def corruption_db_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("jti") / "jti.sqlite3")
    asyncio.run(ensure_schema(f"sqlite+aiosqlite:///{path}"))
    return path


@cache
def valid_assertion(alg: str) -> str:
    return assertion_for(alg, jti=f"valid-{alg}")


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@st.composite
def corruptions(draw: st.DrawFn) -> tuple[str, str]:
    alg = draw(st.sampled_from(ALGORITHMS))
    data = bytearray(valid_assertion(alg).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.one_of(st.sampled_from(BASE64URL.encode()), st.integers(0, 255)))
    if draw(st.booleans()):
        start, end = sorted(draw(st.lists(st.integers(0, len(data)), min_size=2, max_size=2)))
        del data[start:end]
    corrupted = data.decode("latin-1")
    return alg, corrupted


async def test_tok09_uncorrupted_assertions_verify(jti_store: JtiStore, fetcher: JwksFetcher) -> None:
    """The baseline of the property below: every key in one JWKS, each assertion verifies."""
    for alg in ALGORITHMS:
        assert await verify(valid_assertion(alg), inline(*ALGORITHMS), jti_store, fetcher) == CLIENT


def _no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected fetch of {request.url}")


NO_NETWORK = httpx.MockTransport(_no_network)


@settings(max_examples=300, deadline=None)
@given(corruptions())
def test_tok09_corrupted_assertion_never_verifies(corruption_db_path: str, case: tuple[str, str]) -> None:
    alg, corrupted = case
    if corrupted == valid_assertion(alg):
        return

    async def attempt() -> None:
        database, fetcher = SqliteDatabase(corruption_db_path), JwksFetcher(transport=NO_NETWORK)
        try:
            with pytest.raises(InvalidClientAssertion):
                await verify(corrupted, inline(*ALGORITHMS), JtiStore(database), fetcher)
        finally:
            await fetcher.aclose()
            await database.close()

    asyncio.run(attempt())
