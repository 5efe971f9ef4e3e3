"""Key rotation and re-wrapping through the CLI, and the server's start and stop, leave AuditEvents."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ehr.crypto.keys import FileKeyStore
from ehr.db.database import open_database
from tests.audit.helpers import events
from tests.e2e.server import ehr, running_server


@pytest.mark.parametrize("engine_kind", ["sqlite"])
def test_cli_and_server_lifecycle_are_audited(home: Path, server_database: str) -> None:
    assert ehr(home, "keys", "rotate", database_url=server_database).returncode == 0
    assert ehr(home, "keys", "rewrap", database_url=server_database).returncode == 0
    with running_server(home, server_database):
        pass
    verified = ehr(home, "audit", "verify", database_url=server_database)
    assert verified.returncode == 0, verified.stdout
    async def subtypes() -> list[str]:
        db = open_database(server_database)
        try:
            return [e["subtype"][0]["code"] for e in await events(db, FileKeyStore(home / "keys"))]
        finally:
            await db.close()

    found = asyncio.run(subtypes())
    # init registered the demo client and the demo HL7 v2 sender; then rotate, rewrap, the server's start and stop
    assert found[:4] == ["client-add", "sender-add", "key-rotate", "key-rewrap"]
    assert "server-start" in found and found[-1] == "server-stop"
