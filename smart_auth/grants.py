"""Authorization state in the database: grants (one per authorization, with its refresh token),
one-time authorization codes, EHR launch handles and signed-in browser sessions.

Every secret handed out (code, refresh token, launch handle, session id) is 256 bits from
``secrets`` and stored only as its SHA-256, so a database dump lets nobody act as a client or user.
A grant is the unit of revocation: every access token names its grant (``sid``), and the FHIR
endpoint refuses tokens of a revoked grant, a disabled client or a disabled user.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from ehr.db.database import Database, Row


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class AuthGrant:
    id: str
    client_id: str
    user_id: str | None
    scopes: str
    patient: str | None
    encounter: str | None
    cnf: str | None
    refresh_expires_us: int | None
    revoked_us: int | None
    session_hash: str | None = None   # online_access: the sign-in session it lives with


@dataclass(frozen=True, slots=True)
class GrantStatus:
    active: bool
    client_name: str
    user_name: str | None


@dataclass(frozen=True, slots=True)
class Code:
    grant: AuthGrant
    redirect_uri: str
    challenge: str
    nonce: str | None


_GRANT_COLUMNS = (
    "id", "client_id", "user_id", "scopes", "patient", "encounter", "cnf", "refresh_hash", "refresh_expires_us",
    "created_us", "revoked_us", "session_hash",
)  # previous_refresh_hash starts NULL
_INSERT_GRANT = (
    f"INSERT INTO oauth_grant ({', '.join(_GRANT_COLUMNS)}) "
    f"VALUES ({', '.join(f'${n + 1}' for n in range(len(_GRANT_COLUMNS)))})"
)


class GrantStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    # -- grants and refresh tokens -------------------------------------------------------------

    async def create(
        self, *, client_id: str, user_id: str | None, scopes: str, patient: str | None = None,
        encounter: str | None = None, cnf: str | None = None, refresh_seconds: int | None = None,
        session: str | None = None,
    ) -> tuple[AuthGrant, str | None]:
        """A new grant; with ``refresh_seconds``, also its first refresh token; with ``session``, one
        whose refresh works only while that sign-in session lives (online_access)."""
        now = self._now_us()
        refresh = _new_secret() if refresh_seconds else None
        expires = now + refresh_seconds * 1_000_000 if refresh_seconds else None
        session_hash = digest(session) if session else None
        grant = AuthGrant(
            str(uuid.uuid4()), client_id, user_id, scopes, patient, encounter, cnf, expires, None, session_hash
        )
        await self._db.execute(
            _INSERT_GRANT, grant.id, client_id, user_id, scopes, patient, encounter, cnf,
            digest(refresh) if refresh else None, expires, now, None, session_hash,
        )
        return grant, refresh

    async def complete(
        self, grant: AuthGrant, *, cnf: str | None, refresh_seconds: int | None
    ) -> tuple[AuthGrant, str | None]:
        """At the code exchange: bind the grant to the client certificate presented there (if any),
        and give it its first refresh token when one was granted."""
        refresh = _new_secret() if refresh_seconds else None
        expires = self._now_us() + refresh_seconds * 1_000_000 if refresh_seconds else None
        await self._db.execute(
            "UPDATE oauth_grant SET cnf = $1, refresh_hash = $2, refresh_expires_us = $3 WHERE id = $4",
            cnf, digest(refresh) if refresh else None, expires, grant.id,
        )
        return replace(grant, cnf=cnf, refresh_expires_us=expires), refresh

    async def by_id(self, grant_id: str) -> AuthGrant | None:
        row = await self._db.fetch_one("SELECT * FROM oauth_grant WHERE id = $1", grant_id)
        return _grant(row) if row else None

    async def by_refresh_token(self, token: str) -> AuthGrant | None:
        """The active grant this refresh token belongs to (None if unknown, expired or revoked)."""
        row = await self._db.fetch_one("SELECT * FROM oauth_grant WHERE refresh_hash = $1", digest(token))
        if row is None or row["revoked_us"] is not None or (row["refresh_expires_us"] or 0) <= self._now_us():
            return None
        return _grant(row)

    async def rotate_refresh_token(self, grant: AuthGrant, old: str) -> str | None:
        """Replace the refresh token (the old one stops working); None when another request won."""
        new = _new_secret()
        changed = await self._db.execute(
            "UPDATE oauth_grant SET refresh_hash = $1, previous_refresh_hash = $3 "
            "WHERE id = $2 AND refresh_hash = $3 AND revoked_us IS NULL",
            digest(new), grant.id, digest(old),
        )
        return new if changed else None

    async def revoke_if_replaced(self, token: str) -> str | None:
        """A refresh token that was already rotated away, presented again, means it leaked (or the
        client lost track): the grant it belonged to is revoked (OAuth 2.0 Security BCP, refresh
        token rotation). Returns that grant's id."""
        row = await self._db.fetch_one(
            "SELECT id FROM oauth_grant WHERE previous_refresh_hash = $1 AND revoked_us IS NULL", digest(token)
        )
        if row is None:
            return None
        await self.revoke(row["id"])
        return str(row["id"])

    async def revoke(self, grant_id: str) -> bool:
        changed = await self._db.execute(
            "UPDATE oauth_grant SET revoked_us = $1 WHERE id = $2 AND revoked_us IS NULL", self._now_us(), grant_id
        )
        return bool(changed)

    async def revoke_user(self, user_id: str) -> int:
        """Every grant of a user (logout of all apps, account disabled)."""
        return await self._db.execute(
            "UPDATE oauth_grant SET revoked_us = $1 WHERE user_id = $2 AND revoked_us IS NULL", self._now_us(), user_id
        )

    async def of_user(self, user_id: str, access_seconds: int) -> list[tuple[AuthGrant, int]]:
        """The user's grants that still give access (a live refresh token, or an access token that
        may not have expired yet), newest first, with when each was made (µs)."""
        now = self._now_us()
        rows = await self._db.fetch_all(
            "SELECT * FROM oauth_grant WHERE user_id = $1 AND revoked_us IS NULL "
            "AND (refresh_expires_us > $2 OR created_us > $3) ORDER BY created_us DESC",
            user_id, now, now - access_seconds * 1_000_000,
        )
        return [(_grant(row), int(row["created_us"])) for row in rows]

    async def status(self, grant_id: str) -> GrantStatus:
        """Whether tokens of this grant still work (not revoked, client and user not disabled), and
        the names the audit log shows for its client and user."""
        row = await self._db.fetch_one(
            "SELECT g.revoked_us, c.disabled AS client_disabled, c.name AS client_name, "
            "u.disabled AS user_disabled, u.display_name AS user_name "
            "FROM oauth_grant g JOIN client c ON c.id = g.client_id LEFT JOIN app_user u ON u.id = g.user_id "
            "WHERE g.id = $1",
            grant_id,
        )
        if row is None:
            return GrantStatus(False, "", None)
        active = row["revoked_us"] is None and not row["client_disabled"] and not row["user_disabled"]
        return GrantStatus(active, row["client_name"], row["user_name"])

    async def active(self, grant_id: str) -> bool:
        return (await self.status(grant_id)).active

    # -- authorization codes ---------------------------------------------------------------------

    async def issue_code(
        self, grant: AuthGrant, *, redirect_uri: str, challenge: str, nonce: str | None, seconds: int = 60
    ) -> str:
        code = _new_secret()
        await self._db.execute(
            "INSERT INTO oauth_code (code_hash, grant_id, redirect_uri, challenge, nonce, expires_us, used_us) "
            "VALUES ($1, $2, $3, $4, $5, $6, NULL)",
            digest(code), grant.id, redirect_uri, challenge, nonce, self._now_us() + seconds * 1_000_000,
        )
        return code

    async def redeem_code(self, code: str) -> Code | None:
        """The code's grant, once. A second use revokes the grant (RFC 6749 section 4.1.2)."""
        now = self._now_us()
        key = digest(code)
        async with self._db.transaction() as tx:
            row = await tx.fetch_one("SELECT * FROM oauth_code WHERE code_hash = $1" + self._db.for_update, key)
            if row is None:
                return None
            if row["used_us"] is not None:
                await tx.execute("UPDATE oauth_grant SET revoked_us = $1 WHERE id = $2 AND revoked_us IS NULL",
                                 now, row["grant_id"])
                return None
            await tx.execute("UPDATE oauth_code SET used_us = $1 WHERE code_hash = $2", now, key)
            if row["expires_us"] <= now:
                return None
            grant_row = await tx.fetch_one("SELECT * FROM oauth_grant WHERE id = $1", row["grant_id"])
        if grant_row is None or grant_row["revoked_us"] is not None:
            return None
        return Code(_grant(grant_row), row["redirect_uri"], row["challenge"], row["nonce"])

    # -- EHR launch --------------------------------------------------------------------------------

    async def create_launch(
        self, *, client_id: str, user_id: str, patient: str | None, encounter: str | None = None, seconds: int = 300
    ) -> str:
        handle = _new_secret()
        await self._db.execute(
            "INSERT INTO oauth_launch (handle_hash, client_id, user_id, patient, encounter, expires_us) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            digest(handle), client_id, user_id, patient, encounter, self._now_us() + seconds * 1_000_000,
        )
        return handle

    async def take_launch(self, handle: str, *, client_id: str, user_id: str) -> tuple[str | None, str | None] | None:
        """The (patient, encounter) a launch handle was made for, once, by the same client and user."""
        key = digest(handle)
        row = await self._db.fetch_one("SELECT * FROM oauth_launch WHERE handle_hash = $1", key)
        if row is None or row["client_id"] != client_id or row["user_id"] != user_id:
            return None  # another client's or user's attempt does not use the handle up
        taken = await self._db.fetch_one("DELETE FROM oauth_launch WHERE handle_hash = $1 RETURNING expires_us", key)
        if taken is None or taken["expires_us"] <= self._now_us():
            return None
        return row["patient"], row["encounter"]

    # -- browser sessions --------------------------------------------------------------------------

    async def start_session(self, user_id: str) -> str:
        session = _new_secret()
        now = self._now_us()
        await self._db.execute(
            "INSERT INTO web_session (id_hash, user_id, created_us, seen_us, ended_us) VALUES ($1, $2, $3, $4, NULL)",
            digest(session), user_id, now, now,
        )
        return session

    async def session_user(self, session: str, *, idle_seconds: float, max_seconds: float) -> str | None:
        """The signed-in user of a live session (and mark it seen); None once idle or too old."""
        now = self._now_us()
        row = await self._db.fetch_one("SELECT * FROM web_session WHERE id_hash = $1", digest(session))
        if row is None or row["ended_us"] is not None:
            return None
        if now - row["seen_us"] > idle_seconds * 1e6 or now - row["created_us"] > max_seconds * 1e6:
            await self.end_session(session)
            return None
        await self._db.execute("UPDATE web_session SET seen_us = $1 WHERE id_hash = $2", now, digest(session))
        return str(row["user_id"])

    async def session_live(self, session_hash: str, *, idle_seconds: float, max_seconds: float) -> bool:
        """Whether the sign-in session with this hash is still on: not ended, not idle, not too old.
        (A refresh is not the person's activity: it does not mark the session seen.)"""
        now = self._now_us()
        row = await self._db.fetch_one("SELECT * FROM web_session WHERE id_hash = $1", session_hash)
        return (
            row is not None and row["ended_us"] is None
            and now - row["seen_us"] <= idle_seconds * 1e6 and now - row["created_us"] <= max_seconds * 1e6
        )

    async def end_session(self, session: str) -> None:
        await self._db.execute(
            "UPDATE web_session SET ended_us = $1 WHERE id_hash = $2 AND ended_us IS NULL",
            self._now_us(), digest(session),
        )


def _grant(row: Row) -> AuthGrant:
    return AuthGrant(
        row["id"], row["client_id"], row["user_id"], row["scopes"], row["patient"], row["encounter"], row["cnf"],
        row["refresh_expires_us"], row["revoked_us"], row["session_hash"],
    )
