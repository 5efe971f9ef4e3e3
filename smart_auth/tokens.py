"""Access tokens and id_tokens: JWTs the authorization server signs with RS256 (SMART's OIDC SHALL)
and the FHIR endpoint verifies, pinning the algorithm (``none`` and algorithm confusion are refused).

The signing keys live beside the other keys, outside the database (``<keys>/oauth-NNNNNN.pem``,
mode 0600); the newest signs, all are published in the JWKS so tokens outlive a rotation. The kid is
the RFC 7638 thumbprint.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

ALGORITHM = "RS256"
ACCESS_TOKEN_TYPE = "at+jwt"   # RFC 9068: an access token is never mistaken for an id_token


class InvalidToken(Exception):
    """Why a token is refused; the message names no secret."""


class TokenKeys:
    def __init__(self, keys: list[RSAKey]) -> None:
        if not keys:
            raise ValueError("no signing key")
        self._signing = keys[-1]
        self._kids = [k.thumbprint() for k in keys]
        self._published = [
            {**k.as_dict(private=False), "kid": kid, "use": "sig", "alg": ALGORITHM}
            for k, kid in zip(keys, self._kids, strict=True)
        ]
        self._public = KeySet([RSAKey.import_key(jwk) for jwk in self._published])

    @classmethod
    def load_or_create(cls, directory: Path) -> TokenKeys:
        """The keys in ``directory``; a first one is made when there is none."""
        directory.mkdir(parents=True, exist_ok=True)
        files = sorted(directory.glob("oauth-*.pem"))
        if not files:
            path = directory / "oauth-000001.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(RSAKey.generate_key(2048, private=True).as_pem(private=True))
            files = [path]
        return cls([RSAKey.import_key(f.read_bytes()) for f in files])

    @classmethod
    def ephemeral(cls) -> TokenKeys:
        """One key per process, for tests."""
        return cls([_ephemeral_key()])

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(jwk) for jwk in self._published]}

    def sign(self, claims: dict[str, Any], typ: str = "JWT") -> str:
        header = {"alg": ALGORITHM, "kid": self._kids[-1], "typ": typ}
        return jwt.encode(header, claims, self._signing, algorithms=[ALGORITHM])

    def verify(self, token: str, *, typ: str, issuer: str, audience: str, now: float) -> dict[str, Any]:
        """The claims of a token this server signed, of type ``typ``, for ``audience``, not expired."""
        if len(token) > 8192 or token.count(".") != 2:
            raise InvalidToken("malformed token")
        try:
            decoded = jwt.decode(token, self._public, algorithms=[ALGORITHM])
        except (JoseError, ValueError):
            raise InvalidToken("signature or format invalid") from None
        if decoded.header.get("typ") != typ:
            raise InvalidToken("wrong token type")
        claims = decoded.claims
        aud = claims.get("aud")
        if claims.get("iss") != issuer or not (aud == audience or (isinstance(aud, list) and audience in aud)):
            raise InvalidToken("issued by another server or for another audience")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now:
            raise InvalidToken("expired")
        return claims


@cache
def _ephemeral_key() -> RSAKey:
    return RSAKey.generate_key(2048, private=True)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What an access token says, as the FHIR endpoint needs it."""

    token_id: str
    grant_id: str
    client_id: str
    subject: str             # the user, or the client itself (client_credentials)
    scope: str
    expires: int
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None
    role: str | None = None
    cnf: str | None = None   # x5t#S256 the token is bound to (RFC 8705)

    @classmethod
    def of(cls, claims: dict[str, Any]) -> AccessClaims:
        try:
            cnf = claims.get("cnf")
            return cls(
                token_id=str(claims["jti"]), grant_id=str(claims["sid"]), client_id=str(claims["client_id"]),
                subject=str(claims["sub"]), scope=str(claims["scope"]), expires=int(claims["exp"]),
                patient=claims.get("patient"), encounter=claims.get("encounter"),
                fhir_user=claims.get("fhirUser"), role=claims.get("role"),
                cnf=cnf.get("x5t#S256") if isinstance(cnf, dict) else None,
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidToken("claims missing") from None

    def to_claims(self, issuer: str, audience: str, issued: int) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": issuer, "aud": audience, "sub": self.subject, "client_id": self.client_id, "scope": self.scope,
            "iat": issued, "exp": self.expires, "jti": self.token_id, "sid": self.grant_id,
        }
        optional = {"patient": self.patient, "encounter": self.encounter, "fhirUser": self.fhir_user,
                    "role": self.role}
        claims.update({k: v for k, v in optional.items() if v is not None})
        if self.cnf:
            claims["cnf"] = {"x5t#S256": self.cnf}
        return claims


def new_token_id() -> str:
    return secrets.token_urlsafe(16)
