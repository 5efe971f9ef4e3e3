from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_URL, _admin
from tests.e2e.server import ehr


@pytest.fixture
def server_database(engine_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of its own for the server processes of one test."""
    if engine_kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'state' / 'ehr.sqlite3'}"
        return
    request.getfixturevalue("postgres_url")  # skips (or fails in CI) when PostgreSQL is unreachable
    name = f"ehr_e2e_{uuid.uuid4().hex[:12]}"
    _admin(ADMIN_URL, f'CREATE DATABASE "{name}"')
    yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    _admin(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def home(tmp_path: Path, server_database: str) -> Path:
    """An initialised state directory: dev PKI, keys, database, the demo client."""
    state = tmp_path / "state"
    result = ehr(state, "init", database_url=server_database)
    assert result.returncode == 0, result.stdout + result.stderr
    return state
