"""Where the shared, read-only conformance data lives (``shared/`` beside the repository).

Tests that need it fail when ``CI=true`` and skip loudly elsewhere. ``EHR_SHARED_DIR``
points somewhere else.
"""

from __future__ import annotations

import importlib.util
import json
import os
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SHARED = Path(os.environ.get("EHR_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared"))
R4_PACKAGE = SHARED / "fhir" / "hl7.fhir.r4.core-4.0.1.tgz"
CONFORMANCE = SHARED / "conformance-data"


def require(path: Path) -> Path:
    """``path`` if it exists; otherwise fail under CI and skip (loudly) elsewhere."""
    if path.exists():
        return path
    reason = f"MISSING SHARED DATA: {path} is needed for this test (official FHIR R4 material)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def load_json(path: Path) -> object:
    """Parse like the server does: numbers with a fraction or exponent become Decimal."""
    with path.open(encoding="utf-8") as handle:
        return json.load(handle, parse_float=Decimal)


def committed_table(name: str) -> str:
    """The text of a generated table as the package ships it (ehr/fhir/data/NAME)."""
    return resources.files("ehr.fhir").joinpath("data", name).read_text(encoding="ascii")


def committed_json(name: str) -> dict[str, Any]:
    table: dict[str, Any] = json.loads(committed_table(name))
    return table


def generator(script: str) -> ModuleType:
    """A table generator from scripts/ (not a package), loaded as a module."""
    path = Path(__file__).resolve().parents[2] / "scripts" / f"{script}.py"
    spec = importlib.util.spec_from_file_location(script, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
