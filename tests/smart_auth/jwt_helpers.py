"""Client keys and signed client assertions (RFC 7523, SMART "Client Authentication: Asymmetric"),
as a SMART confidential-asymmetric or Backend Services client would make them. Shared by tests.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from joserfc import jwk, jws

CURVES = {"ES256": "P-256", "ES384": "P-384"}


def make_client_key(alg: str, *, kid: str | None = None) -> tuple[jwk.Key, dict[str, Any]]:
    """A private key for ``alg`` (RS256/RS384: RSA 2048; ES256/ES384: P-256/P-384) and the public
    JWKS a client would register: one key with kid (``kid`` or the key's thumbprint), alg and use."""
    key: jwk.Key
    if alg in ("RS256", "RS384"):
        key = jwk.RSAKey.generate_key(2048, parameters={"kid": kid} if kid else None, auto_kid=kid is None)
    elif alg in CURVES:
        key = jwk.ECKey.generate_key(CURVES[alg], parameters={"kid": kid} if kid else None, auto_kid=kid is None)
    else:
        raise ValueError(f"no client keys for {alg}")
    return key, {"keys": [key.as_dict(private=False, alg=alg, use="sig")]}


def make_assertion(
    key: jwk.Key,
    *,
    kid: str | None,
    client_id: str,
    audience: str | list[str],
    alg: str,
    exp_in: float = 240,
    jti: str | None = None,
    headers: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """A signed client assertion. ``kid=None`` leaves kid out; in ``headers`` and ``claims`` a value
    replaces the default and None removes the member; ``now`` defaults to the wall clock."""
    issued = time.time() if now is None else now
    header = _merged({"alg": alg, "typ": "JWT", "kid": kid}, headers)
    payload = _merged(
        {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "exp": int(issued + exp_in),
            "iat": int(issued),
            "jti": jti or uuid.uuid4().hex,
        },
        claims,
    )
    registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
    return jws.serialize_compact(header, json.dumps(payload), key, registry=registry)


def _merged(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    merged = {**defaults, **(overrides or {})}
    return {name: value for name, value in merged.items() if value is not None}
