"""Shared by the mapping tests: map a sample, validate what it produced, find resources."""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

from ehr.store.ingest import check_resource
from interfaces.hl7v2.mapping import to_transaction
from interfaces.hl7v2.message import parse
from tests.fhir.shared import CONFORMANCE, require

ZONE = timezone(timedelta(hours=-5))


def v2_dir() -> Path:
    return require(CONFORMANCE / "hl7v2")


def mapped(raw: bytes) -> dict[str, Any]:
    return to_transaction(parse(raw), zone=ZONE)


def sample(name: str) -> dict[str, Any]:
    return mapped((v2_dir() / name).read_bytes())


def assert_valid(bundle: dict[str, Any]) -> None:
    """Every resource written is valid R4 (as the store will check it, with an id)."""
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if entry["request"]["method"] in ("POST", "PUT"):
            check_resource({**resource, "id": "x"}, resource["resourceType"], "x")


def resources(bundle: dict[str, Any], res_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == res_type]


def entry_of(bundle: dict[str, Any], res_type: str) -> dict[str, Any]:
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == res_type)
