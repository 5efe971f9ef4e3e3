"""Client authentication by signed assertion at the token endpoint: RFC 7523 sections 2.2 and 3
(``private_key_jwt``) as SMART App Launch 2.x "Client Authentication: Asymmetric" and SMART Backend
Services profile it (checklist TOK-09, BS-01).

The order matters: the unverified payload is read only for ``iss``, to find the client's keys; the
signature is verified before any other claim is trusted; the ``jti`` is recorded last, so that a
forged assertion cannot burn a legitimate client's ``jti``. Signatures, keys and base64url are
joserfc's; this module decides which key and which claims are acceptable.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwk, jws
from joserfc.errors import JoseError, SecurityWarning

from ehr.db.database import Conflict, Database

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART 2.x: the server SHALL support RS384 or ES384 (we take both) and MAY take others. Never
# "none", never HS*: a client's public key must not become an HMAC secret (algorithm confusion).
ALGORITHMS: tuple[str, ...] = ("RS384", "ES384", "RS256", "ES256")
_KEY_CLASSES: dict[str, type[jwk.RSAKey] | type[jwk.ECKey]] = {"RSA": jwk.RSAKey, "EC": jwk.ECKey}
_KEY_FITS = {"RS384": ("RSA", None), "RS256": ("RSA", None), "ES384": ("EC", "P-384"), "ES256": ("EC", "P-256")}
_REGISTRY = jws.JWSRegistry(algorithms=ALGORITHMS, strict_check_header=False)  # RFC 7515 4: ignore unknown
_REGISTRY.max_header_length = 4096  # joserfc allows 512 by default: short for a long kid plus a jku
_MAX_ASSERTION = 8192
_MAX_ID = 200  # oauth_jti.issuer and oauth_jti.jti are String(200)
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_MAX_CACHE_SECONDS = 3600
_MAX_CACHED_URIS = 1024


class InvalidClientAssertion(Exception):
    """The assertion does not authenticate a client; the message says why, without secrets."""


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a client registered: an inline JWKS, or the URL of one (the inline JWKS wins)."""

    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None


async def verify_client_assertion(
    assertion: str,
    *,
    token_endpoint: str,
    client_keys: Callable[[str], Awaitable[ClientKeys | None]],
    fetcher: JwksFetcher,
    jti_store: JtiStore,
    now: float,
    max_lifetime: int = 300,
    leeway: int = 30,
) -> str:
    """The client_id that ``assertion`` authenticates; InvalidClientAssertion otherwise."""
    token = _parse(assertion)
    claims = _json_object(token.payload, "payload")
    issuer = _issuer(claims)
    registered = await client_keys(issuer)
    if registered is None:
        raise InvalidClientAssertion("iss is not a registered client")
    jwks = await _registered_jwks(registered, token.protected.get("jku"), fetcher)
    key = _select_key(jwks, token.protected["kid"], token.protected["alg"])
    _verify_signature(token, key)
    _check_subject_and_audience(claims, issuer, token_endpoint)
    exp = _check_times(claims, now, max_lifetime, leeway)
    jti = _jti(claims)
    # The row must outlive every moment at which this assertion would still be accepted: exp + leeway.
    remember_until_us = int((exp + leeway) * 1_000_000)
    if not await jti_store.first_use(issuer, jti, remember_until_us, int(now * 1_000_000)):
        raise InvalidClientAssertion("jti was already used by this client (replay)")
    return issuer


# -- the JWS and its header ----------------------------------------------------------------------


def _parse(assertion: str) -> jws.CompactSignature:
    if len(assertion) > _MAX_ASSERTION:
        raise InvalidClientAssertion(f"assertion is longer than {_MAX_ASSERTION} characters")
    if assertion.count(".") != 2:
        raise InvalidClientAssertion("assertion is not a compact JWS (three base64url parts)")
    try:
        token = jws.extract_compact(assertion.encode("ascii"), registry=_REGISTRY)
    except (JoseError, ValueError, TypeError, RecursionError):
        raise InvalidClientAssertion("assertion is not a compact JWS (bad base64url or header JSON)") from None
    if not isinstance(token.protected, dict):
        raise InvalidClientAssertion("JWS header is not a JSON object")
    _check_header(token.protected)
    return token


def _check_header(header: dict[str, Any]) -> None:
    if header.get("alg") not in ALGORITHMS:  # RFC 7523 3 item 9; SMART: RS384 or ES384
        raise InvalidClientAssertion(f"header alg must be one of {', '.join(ALGORITHMS)}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:  # SMART: kid SHALL be present
        raise InvalidClientAssertion("header kid is required")
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ.upper() != "JWT":  # SMART: typ is "JWT" (media types ignore case)
        raise InvalidClientAssertion('header typ, if present, must be "JWT"')
    if "jku" in header and not isinstance(header["jku"], str):
        raise InvalidClientAssertion("header jku must be a URL")
    if "crit" in header or "b64" in header:  # RFC 7515 4.1.11: no extensions are understood here
        raise InvalidClientAssertion("header crit and b64 extensions are not supported")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise InvalidClientAssertion(f"JWS {what} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidClientAssertion(f"JWS {what} is not a JSON object")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity would slip through comparisons


# -- keys ----------------------------------------------------------------------------------------


def _issuer(claims: dict[str, Any]) -> str:
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not 1 <= len(issuer) <= _MAX_ID:
        raise InvalidClientAssertion("iss (the client_id) is required")
    return issuer


async def _registered_jwks(registered: ClientKeys, jku: str | None, fetcher: JwksFetcher) -> dict[str, Any]:
    # SMART: a jku must match a registered JWKS URL; an unregistered URL is never fetched.
    if jku is not None and jku != registered.jwks_uri:
        raise InvalidClientAssertion("header jku is not the client's registered JWKS URL")
    if registered.jwks is not None:
        return registered.jwks
    if registered.jwks_uri is not None:
        return await fetcher.get(registered.jwks_uri)
    raise InvalidClientAssertion("client has no registered JWKS or JWKS URL")


def _fits(candidate: Any, kid: str, alg: str) -> bool:
    kty, crv = _KEY_FITS[alg]
    if not isinstance(candidate, dict) or candidate.get("kid") != kid or candidate.get("kty") != kty:
        return False
    ops = candidate.get("key_ops")
    return (
        (crv is None or candidate.get("crv") == crv)
        and candidate.get("alg", alg) == alg
        and candidate.get("use", "sig") == "sig"
        and (ops is None or (isinstance(ops, list) and "verify" in ops))
    )


def _select_key(jwks: dict[str, Any], kid: str, alg: str) -> jwk.Key:
    """SMART: the key with this kid whose kty fits alg; exactly one, else fail."""
    candidates = jwks.get("keys")
    if not isinstance(candidates, list):
        raise InvalidClientAssertion("client's JWKS has no keys list")
    fitting = [candidate for candidate in candidates if _fits(candidate, kid, alg)]
    if not fitting:
        raise InvalidClientAssertion("no key of the client's JWKS has this kid and fits alg")
    if len(fitting) > 1:
        raise InvalidClientAssertion("more than one key of the client's JWKS has this kid and fits alg")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SecurityWarning)  # e.g. an RSA key under 2048 bits
            return _KEY_CLASSES[_KEY_FITS[alg][0]].import_key(fitting[0])
    except (JoseError, ValueError, TypeError, KeyError, SecurityWarning):
        raise InvalidClientAssertion("the client's key with this kid is malformed or too weak") from None


def _verify_signature(token: jws.CompactSignature, key: jwk.Key) -> None:
    try:
        valid = jws.validate_compact(token, key, registry=_REGISTRY)
    except (JoseError, ValueError, TypeError):
        valid = False
    if not valid:
        raise InvalidClientAssertion("signature does not verify with the client's key")


# -- claims (trusted only once the signature verified) -------------------------------------------


def _check_subject_and_audience(claims: dict[str, Any], issuer: str, token_endpoint: str) -> None:
    if claims.get("sub") != issuer:  # RFC 7523 3 items 1-2; SMART: iss = sub = client_id
        raise InvalidClientAssertion("sub must equal iss (the client_id)")
    aud = claims.get("aud")
    if aud != token_endpoint and not (isinstance(aud, list) and token_endpoint in aud):  # RFC 7523 3 item 3
        raise InvalidClientAssertion("aud is not this token endpoint's URL")


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClientAssertion(f"{name} must be a NumericDate")
    return float(value)


def _check_times(claims: dict[str, Any], now: float, max_lifetime: int, leeway: int) -> float:
    exp = _number(claims, "exp")
    if exp is None:  # RFC 7523 3 item 4
        raise InvalidClientAssertion("exp is required")
    if not exp > now - leeway:
        raise InvalidClientAssertion("assertion has expired")
    if not exp <= now + max_lifetime + leeway:  # SMART: exp no more than five minutes ahead
        raise InvalidClientAssertion(f"exp is more than {max_lifetime} seconds ahead")
    for name in ("nbf", "iat"):  # RFC 7523 3 items 5-6
        value = _number(claims, name)
        if value is not None and not value <= now + leeway:
            raise InvalidClientAssertion(f"{name} is in the future")
    return exp


def _jti(claims: dict[str, Any]) -> str:
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= _MAX_ID:  # SMART: jti SHALL be present
        raise InvalidClientAssertion(f"jti is required (1 to {_MAX_ID} characters)")
    return jti


# -- replay --------------------------------------------------------------------------------------


class JtiStore:
    """The jti values seen per issuer, until their assertions can no longer be accepted (RFC 7523
    3 item 7; SMART: refuse a replayed jti within the assertion's lifetime)."""

    PURGE_EVERY_US = 60_000_000

    def __init__(self, db: Database) -> None:
        self._db = db
        self._next_purge_us = 0

    async def first_use(self, issuer: str, jti: str, expires_us: int, now_us: int) -> bool:
        if now_us >= self._next_purge_us:
            self._next_purge_us = now_us + self.PURGE_EVERY_US
            await self._db.execute("DELETE FROM oauth_jti WHERE expires_us < $1", now_us)
        if await self._insert(issuer, jti, expires_us):
            return True
        # The row may be one the purge has not reached yet: its assertion is dead, so the jti is free.
        reclaimed = await self._db.execute(
            "DELETE FROM oauth_jti WHERE issuer = $1 AND jti = $2 AND expires_us < $3", issuer, jti, now_us
        )
        return reclaimed == 1 and await self._insert(issuer, jti, expires_us)

    async def _insert(self, issuer: str, jti: str, expires_us: int) -> bool:
        try:
            await self._db.execute(
                "INSERT INTO oauth_jti (issuer, jti, expires_us) VALUES ($1, $2, $3)", issuer, jti, expires_us
            )
        except Conflict:
            return False
        return True


# -- JWKS URLs -----------------------------------------------------------------------------------


class JwksFetcher:
    """Fetches a client's JWKS URL: https only (http to loopback hosts for development), bounded
    in size and time, cached no longer than its Cache-Control allows (SMART: do not cache a JWKS
    longer than allowed; without max-age it is not cached) and never beyond an hour."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        timeout: float = 5.0,
        max_bytes: int = 65536,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: httpx.MockTransport
    ) -> None:
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self._client = httpx.AsyncClient(
            verify=verify,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,  # a redirect could lead to plain http or an unregistered host
            trust_env=False,  # no proxies or .netrc credentials from the environment
            headers={"Accept": "application/json, application/jwk-set+json", "Accept-Encoding": "identity"},
        )
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def get(self, uri: str) -> dict[str, Any]:
        cached = self._cache.pop(uri, None)
        if cached is not None and cached[0] > self._clock():
            self._cache[uri] = cached
            return cached[1]
        _check_uri(uri)
        started = self._clock()
        jwks, fresh_for = await self._fetch(uri)
        if fresh_for > 0:
            if len(self._cache) >= _MAX_CACHED_URIS:
                del self._cache[next(iter(self._cache))]
            self._cache[uri] = (started + fresh_for, jwks)
        return jwks

    async def _fetch(self, uri: str) -> tuple[dict[str, Any], float]:
        try:
            async with asyncio.timeout(self._timeout), self._client.stream("GET", uri) as response:
                if response.status_code != 200:
                    raise InvalidClientAssertion(f"JWKS URL answered HTTP {response.status_code}")
                body = await self._read(response)
                fresh_for = _freshness(response.headers)
        except TimeoutError:
            raise InvalidClientAssertion("JWKS URL did not answer in time") from None
        except httpx.HTTPError as exc:
            raise InvalidClientAssertion(f"JWKS URL could not be fetched ({type(exc).__name__})") from None
        jwks = _json_object(body, "JWKS")
        if not isinstance(jwks.get("keys"), list):
            raise InvalidClientAssertion("JWKS URL's document has no keys list")
        return jwks, fresh_for

    async def _read(self, response: httpx.Response) -> bytes:
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise InvalidClientAssertion("JWKS URL answered with a content encoding")  # no decompression bombs
        declared = _digits(response.headers.get("content-length", "0"))
        if declared is None or declared > self._max_bytes:
            raise InvalidClientAssertion(f"JWKS is larger than {self._max_bytes} bytes")
        body = bytearray()
        async for chunk in response.aiter_bytes():  # identity: the bytes as they arrive
            body += chunk
            if len(body) > self._max_bytes:
                raise InvalidClientAssertion(f"JWKS is larger than {self._max_bytes} bytes")
        return bytes(body)

    async def aclose(self) -> None:
        await self._client.aclose()


def _check_uri(uri: str) -> None:
    try:
        url = httpx.URL(uri)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise InvalidClientAssertion("JWKS URL is not a URL") from None
    if url.scheme == "https" and url.host:
        return
    if url.scheme == "http" and url.host in _LOOPBACK:
        return
    raise InvalidClientAssertion("JWKS URL must be https (plain http only to a loopback host)")


def _freshness(headers: httpx.Headers) -> float:
    """Seconds the response may be reused (RFC 9111 4.2.1, 5.2.2): max-age less Age; none without max-age."""
    directives: dict[str, str] = {}
    for part in headers.get_list("cache-control", split_commas=True):
        name, _, value = part.strip().partition("=")
        directives.setdefault(name.strip().lower(), value.strip().strip('"'))
    max_age, age = _digits(directives.get("max-age")), _digits(headers.get("age", "0"))
    if "no-store" in directives or "no-cache" in directives or max_age is None or age is None:
        return 0.0
    return float(max(0, min(max_age - age, _MAX_CACHE_SECONDS)))


def _digits(text: str | None) -> int | None:
    """A header value that must be a non-negative decimal integer (delta-seconds, a length)."""
    text = (text or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None
