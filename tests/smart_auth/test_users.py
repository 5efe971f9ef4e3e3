"""People who sign in: unique usernames, a role, a password that only the registry checks, and an
AuditEvent for every administrative change, with neither the password nor its hash in it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ehr.audit.log import AuditLog
from ehr.context import operator_context
from ehr.crypto.keys import MemoryKeyStore
from ehr.db.database import Database
from ehr.errors import Category, EhrError
from smart_auth.users import User, UserRegistry
from tests.audit.helpers import events

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "tr0ub4dor & three more words"


@pytest.fixture
def users(db: Database, audit: AuditLog) -> UserRegistry:
    return UserRegistry(db, audit)


async def _add(users: UserRegistry, username: str = "alice", **extra: Any) -> User:
    return await users.add(operator_context(), username, "Alice Smith", "clinician", PASSWORD, **extra)


def _detail(event: dict[str, Any]) -> dict[str, str]:
    return {d["type"]: d["valueString"] for e in event.get("entity", []) for d in e.get("detail", [])}


async def _hashes(db: Database) -> list[str]:
    return [row["password_hash"] for row in await db.fetch_all("SELECT password_hash FROM app_user")]


async def test_an_added_user_signs_in_with_its_password(users: UserRegistry) -> None:
    added = await _add(users, fhir_user="Practitioner/p-1")
    assert added == User(added.id, "alice", "Alice Smith", "clinician", "Practitioner/p-1", False)
    assert await users.authenticate("alice", PASSWORD) == added
    assert await users.by_id(added.id) == added
    assert await users.by_username("alice") == added


async def test_the_password_is_stored_only_as_a_hash(users: UserRegistry, db: Database) -> None:
    await _add(users)
    [stored] = await _hashes(db)
    assert stored.startswith("scrypt$15$8$1$") and PASSWORD not in stored


async def test_wrong_or_unknown_credentials_sign_no_one_in(users: UserRegistry) -> None:
    await _add(users)
    assert await users.authenticate("alice", "correct horse battery stapler") is None
    assert await users.authenticate("bob", PASSWORD) is None


async def test_usernames_ignore_case(users: UserRegistry) -> None:
    added = await _add(users)
    assert await users.authenticate("ALICE", PASSWORD) == added
    with pytest.raises(EhrError) as caught:
        await users.add(operator_context(), "Alice", "Another Alice", "nurse", NEW_PASSWORD)
    assert caught.value.category is Category.CONFLICT


@pytest.mark.parametrize("username", ["", "a" * 201, "al ice", "alice\x00", "ålice", "alice'; --"])
async def test_malformed_usernames_sign_no_one_in_and_raise_nothing(users: UserRegistry, username: str) -> None:
    assert await users.authenticate(username, PASSWORD) is None
    assert await users.by_username(username) is None


async def test_a_disabled_user_cannot_sign_in_until_enabled(users: UserRegistry) -> None:
    added = await _add(users)
    await users.set_disabled(operator_context(), added.id, True)
    assert await users.authenticate("alice", PASSWORD) is None
    assert (await users.by_id(added.id)) == User(added.id, "alice", "Alice Smith", "clinician", None, True)
    await users.set_disabled(operator_context(), added.id, False)
    assert await users.authenticate("alice", PASSWORD) == added


async def test_a_new_password_replaces_the_old(users: UserRegistry) -> None:
    added = await _add(users)
    await users.set_password(operator_context(), added.id, NEW_PASSWORD)
    assert await users.authenticate("alice", PASSWORD) is None
    assert await users.authenticate("alice", NEW_PASSWORD) == added


async def test_a_new_password_meets_the_policy(users: UserRegistry) -> None:
    added = await _add(users)
    with pytest.raises(EhrError) as caught:
        await users.set_password(operator_context(), added.id, "short")
    assert caught.value.category is Category.INVALID and "at least 12" in caught.value.message
    with pytest.raises(EhrError) as caught:
        await users.set_password(operator_context(), added.id, "alice-alice-alice")
    assert caught.value.category is Category.INVALID and "username" in caught.value.message
    assert await users.authenticate("alice", PASSWORD) == added


async def test_changes_to_an_unknown_user_are_not_found(users: UserRegistry) -> None:
    for change in (
        users.set_disabled(operator_context(), "no-such-user", True),
        users.set_password(operator_context(), "no-such-user", NEW_PASSWORD),
    ):
        with pytest.raises(EhrError) as caught:
            await change
        assert caught.value.category is Category.NOT_FOUND
    assert await users.by_id("no-such-user") is None


async def test_a_username_is_taken_once(users: UserRegistry) -> None:
    await _add(users)
    with pytest.raises(EhrError) as caught:
        await users.add(operator_context(), "alice", "Another Alice", "nurse", NEW_PASSWORD)
    assert caught.value.category is Category.CONFLICT
    assert [user.display_name for user in await users.list()] == ["Alice Smith"]


async def test_users_are_listed_by_username(users: UserRegistry) -> None:
    for username in ("carol", "alice", "bob"):
        await _add(users, username)
    assert [user.username for user in await users.list()] == ["alice", "bob", "carol"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"role": "superuser"}, "unknown role"),
        ({"username": ""}, "username"),
        ({"username": "a" * 201}, "username"),
        ({"username": "alice smith"}, "username"),
        ({"username": "alice/../root"}, "username"),
        ({"display_name": ""}, "display name"),
        ({"display_name": "Alice\nSmith"}, "display name"),
        ({"fhir_user": "Organization/1"}, "fhir_user"),
        ({"fhir_user": "Practitioner/"}, "fhir_user"),
        ({"fhir_user": "Practitioner/a_b"}, "fhir_user"),
        ({"fhir_user": "Practitioner/" + "1" * 65}, "fhir_user"),
        ({"fhir_user": "https://other.example/fhir/Practitioner/1"}, "fhir_user"),
        ({"password": "too short"}, "at least 12"),
        ({"password": "my name is alice ok"}, "username"),
    ],
)
async def test_invalid_input_is_refused_with_a_reason(
    users: UserRegistry, change: dict[str, str], reason: str
) -> None:
    fields = {"username": "alice", "display_name": "Alice Smith", "role": "nurse", "password": PASSWORD} | change
    with pytest.raises(EhrError) as caught:
        await users.add(operator_context(), **fields)
    assert caught.value.category is Category.INVALID and reason in caught.value.message
    assert await users.list() == []


@pytest.mark.parametrize("fhir_user", ["Patient/123", "PractitionerRole/a.b-c", "RelatedPerson/x", "Person/1"])
async def test_every_fhir_user_type_is_accepted(users: UserRegistry, fhir_user: str) -> None:
    assert (await _add(users, fhir_user=fhir_user)).fhir_user == fhir_user


async def test_each_change_leaves_one_audit_event(users: UserRegistry, db: Database, keys: MemoryKeyStore) -> None:
    added = await _add(users, fhir_user="Practitioner/p-1")
    await users.set_disabled(operator_context(), added.id, True)
    await users.set_disabled(operator_context(), added.id, False)
    await users.set_password(operator_context(), added.id, NEW_PASSWORD)
    await users.authenticate("alice", NEW_PASSWORD)  # signing in is the login route's to audit
    add, disable, enable, password = found = await events(db, keys)
    assert [e["subtype"][0]["code"] for e in found] == ["user-add", "user-disable", "user-enable", "user-password"]
    assert all(e["type"]["code"] == "110137" and e["outcome"] == "0" for e in found)
    assert all(e["agent"][0]["who"]["identifier"]["value"].startswith("operator:") for e in found)
    assert _detail(add) == {"user": added.id, "username": "alice", "role": "clinician", "fhir_user": "Practitioner/p-1"}
    assert _detail(disable) == _detail(enable) == _detail(password) == {"user": added.id}


async def test_a_patient_user_is_named_as_a_patient(users: UserRegistry, db: Database, keys: MemoryKeyStore) -> None:
    await _add(users, fhir_user="Patient/pat-7")
    [add] = await events(db, keys)
    assert _detail(add)["fhir_user"] == "Patient"
    assert {"reference": "Patient/pat-7"} in [e.get("what") for e in add["entity"]]


async def test_refused_changes_are_audited_as_failures(
    users: UserRegistry, db: Database, keys: MemoryKeyStore
) -> None:
    added = await _add(users)
    with pytest.raises(EhrError):
        await _add(users)
    with pytest.raises(EhrError):
        await users.set_password(operator_context(), added.id, "short")
    with pytest.raises(EhrError):
        await users.set_disabled(operator_context(), "no-such-user", True)
    outcomes = [(e["subtype"][0]["code"], e["outcome"]) for e in await events(db, keys)]
    assert outcomes == [("user-add", "0"), ("user-add", "4"), ("user-password", "4"), ("user-disable", "4")]


async def test_no_password_or_hash_reaches_the_audit_log(
    users: UserRegistry, db: Database, keys: MemoryKeyStore
) -> None:
    added = await _add(users)
    hashes = await _hashes(db)
    await users.set_password(operator_context(), added.id, NEW_PASSWORD)
    hashes += await _hashes(db)
    with pytest.raises(EhrError):
        await users.set_password(operator_context(), added.id, "alice's password")  # refused by the policy
    logged = json.dumps(await events(db, keys))
    salts_and_keys = [part for stored in hashes for part in stored.split("$")[4:]]
    forbidden = [PASSWORD, NEW_PASSWORD, "alice's password", *hashes, *salts_and_keys]
    assert not [secret for secret in forbidden if secret in logged]
