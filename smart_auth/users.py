"""People who sign in: each has a unique id and username (HIPAA §164.312(a)(2)(i), unique user
identification), a role (smart_auth/roles.py) and a scrypt password hash (smart_auth/passwords.py).

Not ePHI; administrative data. Every change is an administrative event that leaves an AuditEvent
naming who made it; the password and its hash never enter one.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass

from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.context import AccessContext
from ehr.db.database import Conflict, Database, Row
from ehr.errors import Category, EhrError
from smart_auth.passwords import WeakPassword, burn, check_password_policy, hash_password, verify_password
from smart_auth.roles import ROLES

_USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,200}")
# SMART App Launch fhirUser: a reference to one of these types; a FHIR id (R4 datatypes, id)
_FHIR_USER = re.compile(r"(Patient|Practitioner|PractitionerRole|RelatedPerson|Person)/([A-Za-z0-9\-.]{1,64})")
_WORKFORCE = frozenset({"Practitioner", "PractitionerRole"})
_COLUMNS = "id, username, display_name, role, fhir_user, disabled"
_INSERT = (
    "INSERT INTO app_user (id, username, display_name, role, password_hash, fhir_user, created_us, disabled) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    display_name: str
    role: str
    fhir_user: str | None
    disabled: bool


class UserRegistry:
    """Changes are administrative events: each leaves an AuditEvent naming who did it. Hashing runs
    in a worker thread (about 0.1 s of CPU) so that the event loop keeps serving."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

    async def add(
        self, ctx: AccessContext, username: str, display_name: str, role: str, password: str,
        fhir_user: str | None = None,
    ) -> User:
        async with self._audit.audited(ctx, Interaction("user-add")) as event:
            _check_user(username, display_name, role, fhir_user)
            _check_password(password, username)
            username = username.lower()  # one account per name, whatever the case it is typed in
            user = User(str(uuid.uuid4()), username, display_name, role, fhir_user, False)
            event.detail = {"user": user.id, "username": username, "role": role}
            _name_fhir_user(event, fhir_user)
            hashed = await asyncio.to_thread(hash_password, password)
            try:
                await self._db.execute(
                    _INSERT, user.id, username, display_name, role, hashed, fhir_user, time.time_ns() // 1000, False
                )
            except Conflict:
                raise EhrError(Category.CONFLICT, "a user with this username already exists") from None
            return user

    async def authenticate(self, username: str, password: str) -> User | None:
        """The user these credentials name, or None: unknown, disabled or wrong password alike take
        one scrypt verification each. Not audited here: the sign-in route records the attempt."""
        row = None
        if _USERNAME.fullmatch(username):
            row = await self._db.fetch_one(f"SELECT {_COLUMNS}, password_hash FROM app_user WHERE username = $1",
                                           username.lower())
        if row is None:
            await asyncio.to_thread(burn, password)
            return None
        if not await asyncio.to_thread(verify_password, password, row["password_hash"]):
            return None
        user = _user(row)
        return None if user.disabled else user

    async def by_id(self, user_id: str) -> User | None:
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM app_user WHERE id = $1", user_id)
        return _user(row) if row else None

    async def by_username(self, username: str) -> User | None:
        if not _USERNAME.fullmatch(username):
            return None
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM app_user WHERE username = $1", username.lower())
        return _user(row) if row else None

    async def set_disabled(self, ctx: AccessContext, user_id: str, disabled: bool) -> None:
        what = Interaction("user-disable" if disabled else "user-enable", detail={"user": user_id})
        async with self._audit.audited(ctx, what):
            if await self._db.execute("UPDATE app_user SET disabled = $1 WHERE id = $2", disabled, user_id) == 0:
                raise EhrError(Category.NOT_FOUND, "no such user")

    async def set_password(self, ctx: AccessContext, user_id: str, password: str) -> None:
        async with self._audit.audited(ctx, Interaction("user-password", detail={"user": user_id})):
            user = await self.by_id(user_id)
            if user is None:
                raise EhrError(Category.NOT_FOUND, "no such user")
            _check_password(password, user.username)
            hashed = await asyncio.to_thread(hash_password, password)
            await self._db.execute("UPDATE app_user SET password_hash = $1 WHERE id = $2", hashed, user_id)

    async def list(self) -> list[User]:
        return [_user(row) for row in await self._db.fetch_all(f"SELECT {_COLUMNS} FROM app_user ORDER BY username")]


def _check_user(username: str, display_name: str, role: str, fhir_user: str | None) -> None:
    if not _USERNAME.fullmatch(username):
        raise EhrError(Category.INVALID, "a username is 1 to 200 of the characters A-Z a-z 0-9 . _ @ -")
    if not display_name.strip() or len(display_name) > 200 or not display_name.isprintable():
        raise EhrError(Category.INVALID, "a display name is 1 to 200 printable characters")
    if role not in ROLES:
        raise EhrError(Category.INVALID, f"unknown role; one of: {', '.join(sorted(ROLES))}")
    if role == "patient" and not (fhir_user or "").startswith("Patient/"):
        raise EhrError(Category.INVALID, "a patient's account needs --fhir-user Patient/<id>")
    if fhir_user is not None and not _FHIR_USER.fullmatch(fhir_user):
        raise EhrError(
            Category.INVALID,
            "fhir_user is Type/id with Type one of Patient, Practitioner, PractitionerRole, RelatedPerson, Person",
        )


def _check_password(password: str, username: str) -> None:
    try:
        check_password_policy(password, username)
    except WeakPassword as exc:
        raise EhrError(Category.INVALID, str(exc)) from None


def _name_fhir_user(event: Interaction, fhir_user: str | None) -> None:
    """A workforce reference goes into the detail whole; of any other only its type (the id points
    into a patient's record), and a patient is named the way every event names one (pseudonymised
    in the SIEM feed)."""
    if fhir_user is None:
        return
    kind, _, ident = fhir_user.partition("/")
    event.detail["fhir_user"] = fhir_user if kind in _WORKFORCE else kind
    if kind == "Patient":
        event.patient = ident


def _user(row: Row) -> User:
    return User(row["id"], row["username"], row["display_name"], row["role"], row["fhir_user"], bool(row["disabled"]))
