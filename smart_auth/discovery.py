"""What the server tells clients about itself: SMART configuration (checklist b1), OpenID Connect
discovery (b5), the JWKS of its token-signing keys, and the style a launched app may use.

Every capability listed is one the server really has; each is covered by a test."""

from __future__ import annotations

from typing import Any

from smart_auth.client_assertion import ALGORITHMS
from smart_auth.scopes import KNOWN_SCOPES
from smart_auth.server import AuthServer
from smart_auth.tokens import ALGORITHM

CAPABILITIES = (
    "launch-ehr", "launch-standalone", "authorize-post",
    "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "sso-openid-connect", "context-banner", "context-style", "context-ehr-patient", "context-standalone-patient",
    "permission-offline", "permission-online", "permission-patient", "permission-user", "permission-v1",
    "permission-v2",
)
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth")
STYLE = {"color_background": "#ffffff", "color_error": "#b00020", "color_highlight": "#1d4ed8",
         "color_modal_backdrop": "", "color_success": "#15803d", "color_text": "#111827",
         "dim_border_radius": "4px", "dim_font_size": "16px", "dim_spacing_size": "16px",
         "font_family_body": "system-ui, sans-serif", "font_family_heading": "system-ui, sans-serif"}


def smart_configuration(server: AuthServer) -> dict[str, Any]:
    return {
        "issuer": server.issuer,
        "jwks_uri": server.endpoint("jwks"),
        "authorization_endpoint": server.endpoint("authorize"),
        "token_endpoint": server.endpoint("token"),
        "introspection_endpoint": server.endpoint("introspect"),
        "revocation_endpoint": server.endpoint("revoke"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "scopes_supported": sorted(KNOWN_SCOPES) + ["patient/*.cruds", "user/*.cruds", "system/*.cruds",
                                                    "patient/*.read", "user/*.read", "system/*.read"],
        "capabilities": list(CAPABILITIES),
        "tls_client_certificate_bound_access_tokens": True,
    }


def openid_configuration(server: AuthServer) -> dict[str, Any]:
    return {
        "issuer": server.issuer,
        "authorization_endpoint": server.endpoint("authorize"),
        "token_endpoint": server.endpoint("token"),
        "jwks_uri": server.endpoint("jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "name", "fhirUser"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
    }
