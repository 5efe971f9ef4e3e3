"""Administrative changes leave AuditEvents naming who did them (the CLI and server lifecycle are
in tests/e2e/test_audit_lifecycle.py)."""

from __future__ import annotations

import pytest

from ehr.api.services import Services
from ehr.context import operator_context
from ehr.crypto.keys import MemoryKeyStore
from ehr.db.database import Database
from ehr.errors import EhrError
from tests.audit.helpers import events


def _detail(event: dict[str, object]) -> dict[str, str]:
    entities = event.get("entity", [])
    assert isinstance(entities, list)
    return {d["type"]: d["valueString"] for e in entities for d in e.get("detail", [])}


async def test_client_changes_are_audited(services: Services, db: Database, keys: MemoryKeyStore) -> None:
    added = await services.clients.add(operator_context(), "lab", "thumb-1", "system/Observation.cruds")
    await services.clients.set_disabled(operator_context(), added.id, True)
    with pytest.raises(EhrError):
        await services.clients.set_disabled(operator_context(), "no-such-client", True)
    add, disable, failed = await events(db, keys)
    assert add["subtype"][0]["code"] == "client-add" and add["type"]["code"] == "110137"
    assert _detail(add)["scopes"] == "system/Observation.cruds"
    assert add["agent"][0]["who"]["identifier"]["value"].startswith("operator:")
    assert disable["subtype"][0]["code"] == "client-disable" and disable["outcome"] == "0"
    assert failed["outcome"] == "4"
