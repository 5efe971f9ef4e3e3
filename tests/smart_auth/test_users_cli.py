"""``ehr users``: the operator adds, lists, disables, enables users and sets passwords; the password
is read without echo (or from stdin) and never printed. SQLite only: the registry's own tests cover
both engines."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ehr.cli import main
from ehr.crypto.keys import FileKeyStore
from ehr.db.database import Database, open_database
from ehr.settings import Settings
from smart_auth.passwords import verify_password
from tests.audit.helpers import events

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "tr0ub4dor & three more words"
T = TypeVar("T")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state directory with keys (what the commands need of ``ehr init``); EHR_HOME is restored after."""
    state = tmp_path / "state"
    monkeypatch.setenv("EHR_HOME", str(state))  # main() sets it too; monkeypatch puts it back
    monkeypatch.delenv("EHR_DATABASE_URL", raising=False)
    FileKeyStore.create(Settings(home=state).keys_dir)
    return state


def _ehr(home: Path, *args: str) -> int:
    return main(["--home", str(home), *args])


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def _typed(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Stands in for getpass; returns the prompts it was shown."""
    prompts: list[str] = []
    replies: Iterator[str] = iter(answers)

    def getpass(prompt: str = "Password: ") -> str:
        prompts.append(prompt)
        return next(replies)

    monkeypatch.setattr("getpass.getpass", getpass)
    return prompts


def _query(home: Path, job: Callable[[Database], Awaitable[T]]) -> T:
    async def go() -> T:
        db = open_database(Settings(home=home).database, pool_size=1)
        try:
            return await job(db)
        finally:
            await db.close()

    return asyncio.run(go())


def _stored_hash(home: Path, username: str) -> str:
    async def job(db: Database) -> str:
        row = await db.fetch_one("SELECT password_hash FROM app_user WHERE username = $1", username)
        assert row is not None
        return str(row["password_hash"])

    return _query(home, job)


def _audited(home: Path) -> list[dict[str, Any]]:
    keys = FileKeyStore(Settings(home=home).keys_dir)
    return _query(home, lambda db: events(db, keys))


def _add(home: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> str:
    _stdin(monkeypatch, PASSWORD + "\n")
    assert _ehr(home, "users", "add", "--username", "alice", "--name", "Alice Smith", "--role", "clinician",
                "--password-stdin", *extra) == 0
    return _stored_hash(home, "alice")


def test_add_reads_the_password_from_stdin(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = _add(home, monkeypatch, "--fhir-user", "Practitioner/p-1")
    out, err = capsys.readouterr()
    user_id, username, role = out.split()
    assert (username, role, err) == ("alice", "clinician", "")
    assert verify_password(PASSWORD, stored)
    assert _ehr(home, "users", "list") == 0
    assert capsys.readouterr().out == f"{user_id} alice clinician active Practitioner/p-1\n"


def test_add_prompts_twice_without_echo(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = _typed(monkeypatch, PASSWORD, PASSWORD)
    assert _ehr(home, "users", "add", "--username", "bob", "--name", "Bob", "--role", "nurse") == 0
    assert len(prompts) == 2
    out = capsys.readouterr().out
    assert out.split()[1:] == ["bob", "nurse"] and PASSWORD not in out
    assert verify_password(PASSWORD, _stored_hash(home, "bob"))


def test_add_refuses_passwords_that_differ(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _typed(monkeypatch, PASSWORD, PASSWORD + "!")
    assert _ehr(home, "users", "add", "--username", "bob", "--name", "Bob", "--role", "nurse") == 2
    assert capsys.readouterr().err == "error: the passwords do not match\n"
    assert _ehr(home, "users", "list") == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (("--username", "bob"), "short", "error: a password needs at least 12 characters\n"),
        (("--username", "b o b"), PASSWORD, "error: a username is 1 to 200 of the characters"),
        (("--username", "bob", "--fhir-user", "Device/1"), PASSWORD, "error: fhir_user is Type/id"),
    ],
)
def test_add_reports_invalid_input_on_stderr(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...], password: str, message: str,
) -> None:
    _stdin(monkeypatch, password + "\n")
    assert _ehr(home, "users", "add", "--name", "Bob", "--role", "nurse", "--password-stdin", *args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(message) and password not in err


def test_a_taken_username_is_reported(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(home, monkeypatch)
    _stdin(monkeypatch, NEW_PASSWORD + "\n")
    assert _ehr(home, "users", "add", "--username", "alice", "--name", "Alice B", "--role", "nurse",
                "--password-stdin") == 2
    assert capsys.readouterr().err == "error: a user with this username already exists\n"


def test_an_unknown_role_is_refused_by_the_parser(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _ehr(home, "users", "add", "--username", "bob", "--name", "Bob", "--role", "root", "--password-stdin")
    assert exited.value.code == 2 and "invalid choice: 'root'" in capsys.readouterr().err


def test_disable_enable_and_password(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(home, monkeypatch)
    user_id = capsys.readouterr().out.split()[0]
    assert _ehr(home, "users", "disable", user_id) == 0
    assert _ehr(home, "users", "list") == 0
    assert capsys.readouterr().out == f"{user_id} alice clinician disabled -\n"
    assert _ehr(home, "users", "enable", user_id) == 0
    _stdin(monkeypatch, NEW_PASSWORD + "\r\n")
    assert _ehr(home, "users", "password", user_id, "--password-stdin") == 0
    assert _ehr(home, "users", "list") == 0
    assert capsys.readouterr().out == f"{user_id} alice clinician active -\n"
    assert verify_password(NEW_PASSWORD, _stored_hash(home, "alice"))

    audited = _audited(home)
    assert [e["subtype"][0]["code"] for e in audited] == ["user-add", "user-disable", "user-enable", "user-password"]
    assert all(e["agent"][0]["who"]["identifier"]["value"].startswith("operator:") for e in audited)
    assert PASSWORD not in str(audited) and NEW_PASSWORD not in str(audited)


def test_changes_to_an_unknown_user_are_reported(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _ehr(home, "users", "disable", "no-such-user") == 2
    assert capsys.readouterr().err == "error: no such user\n"
    _stdin(monkeypatch, NEW_PASSWORD + "\n")
    assert _ehr(home, "users", "password", "no-such-user", "--password-stdin") == 2
    assert capsys.readouterr().err == "error: no such user\n"
