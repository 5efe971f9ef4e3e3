"""Who is asking, on whose behalf and why: built once per request at the edge, passed to the store."""

from __future__ import annotations

import getpass
import secrets
from dataclasses import dataclass, field

from smart_auth.scopes import Permissions


class Trail:
    """Mutable mark of one request: has its AuditEvent been recorded yet (so the edge records one
    only when the store was never reached)."""

    __slots__ = ("recorded",)

    def __init__(self) -> None:
        self.recorded = False


@dataclass(frozen=True, slots=True)
class AccessContext:
    actor: str                      # unique id of the person, app or system (Client.id, later User.id)
    actor_display: str              # a name for people reading the log (never ePHI)
    permissions: Permissions        # what the granted scopes allow
    cert_thumbprint: str | None = None   # RFC 8705 x5t#S256 of the client certificate, if any
    patient: str | None = None      # launch patient: patient/ scopes confine to its compartment
    role: Permissions | None = None  # the signed-in user's role: user/ scopes never exceed it
    app: str | None = None          # the client app acting for the user (actor), when they differ
    app_display: str | None = None
    purpose: str | None = None      # purposeOfUse, e.g. break-glass (later issue)
    address: str | None = None      # network address of the peer
    request_id: str = field(default_factory=lambda: secrets.token_hex(8))
    trail: Trail = field(default_factory=Trail, compare=False, repr=False)


def anonymous_context(address: str | None) -> AccessContext:
    """Who an unauthenticated request is: nobody, with no permissions, from an address."""
    return AccessContext(actor="anonymous", actor_display="anonymous", permissions=Permissions(()), address=address)


def system_context(name: str, scopes: str = "system/*.cruds") -> AccessContext:
    """A context for the server's own command-line tools (import, verify) run by an operator."""
    return AccessContext(actor=f"cli:{name}", actor_display=name, permissions=Permissions.parse(scopes))


def operator_context() -> AccessContext:
    """The operator running an ``ehr`` command: the OS account is who (no data permissions)."""
    user = getpass.getuser()
    return AccessContext(actor=f"operator:{user}", actor_display=user, permissions=Permissions(()))


def server_context(base_url: str) -> AccessContext:
    """The server itself, for its own events (start, stop)."""
    return AccessContext(actor="server", actor_display=base_url, permissions=Permissions(()))
