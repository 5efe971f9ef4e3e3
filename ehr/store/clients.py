"""Registered clients: SMART apps, backend services, and systems identified by their certificate.

A client's registration says how it authenticates at the token endpoint (``auth_method``), where
authorization codes may go (exact ``redirect_uris``), its keys (``jwks`` or ``jwks_uri``), the grant
types it may use, and the most it may be granted (``scopes``). A client registered with a
certificate may also call the FHIR API with that certificate alone, with its ``system/`` scopes.

Not ePHI; administrative data. Client secrets are stored as SHA-256 hashes (they are 256-bit random
values, so a fast hash is enough).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.context import AccessContext
from ehr.db.database import Conflict, Database, Row
from ehr.errors import Category, EhrError
from smart_auth.scopes import InvalidScope, Permissions

AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
_COLUMNS = (
    "id", "name", "cert_thumbprint", "scopes", "created_us", "disabled", "auth_method", "secret_hash",
    "redirect_uris", "launch_uri", "jwks", "jwks_uri", "grant_types",
)
_INSERT = f"INSERT INTO client ({', '.join(_COLUMNS)}) VALUES ({', '.join(f'${n + 1}' for n in range(len(_COLUMNS)))})"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    name: str
    cert_thumbprint: str | None
    scopes: str
    disabled: bool
    permissions: Permissions
    auth_method: str = "tls_client_auth"
    redirect_uris: tuple[str, ...] = ()
    launch_uri: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    grant_types: frozenset[str] = frozenset({"client_credentials"})
    secret_hash: str | None = field(default=None, repr=False)

    @property
    def public(self) -> bool:
        return self.auth_method == "none"

    def secret_matches(self, secret: str) -> bool:
        if self.secret_hash is None:
            return False
        return hmac.compare_digest(self.secret_hash, _hash_secret(secret))

    def origins(self) -> frozenset[str]:
        """The web origins of its redirect URIs (allowed by CORS on the token and FHIR endpoints)."""
        return frozenset(_origin(uri) for uri in self.redirect_uris)


@dataclass(frozen=True, slots=True)
class Registration:
    """What ``ehr clients add`` asks for; validated by :meth:`ClientRegistry.add`."""

    name: str
    scopes: str
    auth_method: str = "tls_client_auth"
    cert_thumbprint: str | None = None
    redirect_uris: Sequence[str] = ()
    launch_uri: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    grant_types: Sequence[str] | None = None   # default: by auth method and redirect URIs


class ClientRegistry:
    """Registration changes are administrative events: each leaves an AuditEvent naming who did it."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

    async def add(
        self, ctx: AccessContext, name: str, cert_thumbprint: str | None, scopes: str
    ) -> Client:
        """A system client identified by its certificate (mutual TLS)."""
        client, _ = await self.register(ctx, Registration(name, scopes, cert_thumbprint=cert_thumbprint))
        return client

    async def register(self, ctx: AccessContext, reg: Registration) -> tuple[Client, str | None]:
        """Register a client; returns it and, for client_secret_* methods, its new secret (shown once)."""
        async with self._audit.audited(ctx, Interaction("client-add")) as event:
            client, secret = _validated(reg)
            event.detail = {
                "client": client.id, "name": client.name, "auth_method": client.auth_method,
                "x5t#S256": client.cert_thumbprint or "", "scopes": client.scopes,
                "grant_types": " ".join(sorted(client.grant_types)),
            }
            values = (
                client.id, client.name, client.cert_thumbprint, client.scopes, time.time_ns() // 1000, False,
                client.auth_method, client.secret_hash, json.dumps(list(client.redirect_uris)), client.launch_uri,
                json.dumps(client.jwks) if client.jwks is not None else None, client.jwks_uri,
                " ".join(sorted(client.grant_types)),
            )
            try:
                await self._db.execute(_INSERT, *values)
            except Conflict:
                raise EhrError(Category.CONFLICT, "a client with this certificate is already registered") from None
            return client, secret

    async def by_thumbprint(self, thumbprint: str) -> Client | None:
        row = await self._db.fetch_one("SELECT * FROM client WHERE cert_thumbprint = $1", thumbprint)
        return _client(row) if row else None

    async def by_id(self, client_id: str) -> Client | None:
        row = await self._db.fetch_one("SELECT * FROM client WHERE id = $1", client_id)
        return _client(row) if row else None

    async def list(self) -> list[Client]:
        return [_client(row) for row in await self._db.fetch_all("SELECT * FROM client ORDER BY name")]

    async def set_disabled(self, ctx: AccessContext, client_id: str, disabled: bool) -> None:
        what = Interaction("client-disable" if disabled else "client-enable", detail={"client": client_id})
        async with self._audit.audited(ctx, what):
            if await self._db.execute("UPDATE client SET disabled = $1 WHERE id = $2", disabled, client_id) == 0:
                raise EhrError(Category.NOT_FOUND, "no such client")


def _validated(reg: Registration) -> tuple[Client, str | None]:
    def invalid(message: str) -> EhrError:
        return EhrError(Category.INVALID, message)

    if not reg.name.strip() or len(reg.name) > 200:
        raise invalid("a client needs a name of at most 200 characters")
    try:
        permissions = Permissions.parse(reg.scopes)
    except InvalidScope as exc:
        raise invalid(f"invalid scopes: {exc}") from None
    if reg.auth_method not in AUTH_METHODS:
        raise invalid(f"auth method must be one of {', '.join(AUTH_METHODS)}")
    if reg.auth_method == "tls_client_auth" and not reg.cert_thumbprint:
        raise invalid("tls_client_auth needs the client's certificate")
    if reg.auth_method == "private_key_jwt" and not (reg.jwks or reg.jwks_uri):
        raise invalid("private_key_jwt needs the client's JWKS or JWKS URL")
    if reg.jwks is not None and not isinstance(reg.jwks.get("keys"), list):
        raise invalid("a JWKS is a JSON object with a 'keys' array")
    for uri in (*reg.redirect_uris, reg.launch_uri, reg.jwks_uri):
        if uri is not None:
            _check_uri(uri)
    grant_types = frozenset(reg.grant_types if reg.grant_types is not None else _default_grants(reg))
    if not grant_types <= set(GRANT_TYPES):
        raise invalid(f"grant types must be among {', '.join(GRANT_TYPES)}")
    if "authorization_code" in grant_types and not reg.redirect_uris:
        raise invalid("the authorization_code grant needs at least one redirect URI")
    if "client_credentials" in grant_types and reg.auth_method == "none":
        raise invalid("client_credentials needs an authenticated client (not a public one)")
    if "client_credentials" in grant_types and permissions.contexts() - {"system"}:
        raise invalid("client_credentials clients get system/ scopes only")
    secret = secrets.token_urlsafe(32) if reg.auth_method.startswith("client_secret") else None
    client = Client(
        id=str(uuid.uuid4()), name=reg.name.strip(), cert_thumbprint=reg.cert_thumbprint,
        scopes=permissions.scope_string(), disabled=False, permissions=permissions, auth_method=reg.auth_method,
        redirect_uris=tuple(reg.redirect_uris), launch_uri=reg.launch_uri, jwks=reg.jwks, jwks_uri=reg.jwks_uri,
        grant_types=grant_types, secret_hash=_hash_secret(secret) if secret else None,
    )
    return client, secret


def _default_grants(reg: Registration) -> tuple[str, ...]:
    if reg.redirect_uris:
        return ("authorization_code", "refresh_token")
    return ("client_credentials",)


def _check_uri(uri: str) -> None:
    """https, or http to a loopback host (native apps, RFC 8252); no fragment."""
    parts = urlsplit(uri)
    if parts.fragment or not parts.netloc:
        raise EhrError(Category.INVALID, f"{uri!r} is not an absolute URL without a fragment")
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        raise EhrError(Category.INVALID, f"{uri!r} must use https (http only to a loopback address)")


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _client(row: Row) -> Client:
    scopes = row["scopes"]
    jwks = row["jwks"]
    return Client(
        id=row["id"], name=row["name"], cert_thumbprint=row["cert_thumbprint"], scopes=scopes,
        disabled=bool(row["disabled"]), permissions=Permissions.parse(scopes), auth_method=row["auth_method"],
        redirect_uris=tuple(json.loads(row["redirect_uris"] or "[]")), launch_uri=row["launch_uri"],
        jwks=json.loads(jwks) if jwks else None, jwks_uri=row["jwks_uri"],
        grant_types=frozenset((row["grant_types"] or "").split()), secret_hash=row["secret_hash"],
    )
