"""ADT^A40 merge: every resource in the retired patient's compartment is moved to the surviving one.

The mapping (mapping/merge.py) writes the two Patients (``replaces`` / ``replaced-by`` links); this
module reads, page by page, what the retired patient's compartment holds (R4 CompartmentDefinition
Patient) and adds an update per resource with every reference to the retired patient rewritten to the
surviving one. Each update carries ``If-Match`` of the version read, so a resource changed between
the read and the transaction fails the message (AE 206: send it again) rather than losing that
change. References to the patient outside the compartment's parameters are not moved (R4's
compartment is the definition of "the patient's record" everywhere else in this server too).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from ehr.context import AccessContext
from ehr.crypto.canonical import parse_json
from ehr.fhir.search.query import parse
from ehr.store.search import SEARCHABLE, criteria_of, supported_params
from ehr.store.service import Store
from interfaces.hl7v2.errors import Code, Rejected

MAX_MOVED = 5_000   # a merge touching more is refused (AE) rather than one huge transaction
_PAGE = 500


async def retired_patient(store: Store, ctx: AccessContext, token: str) -> str:
    """The id of the one Patient with identifier ``token`` (system|value), or AE 204."""
    criteria = criteria_of("Patient", urlencode({"identifier": token}), store.indexer.base, "MRG-1")
    _, matches, _ = await store.search(ctx, criteria, query=urlencode({"identifier": token}))
    if len(matches) != 1:
        problem = "names no known patient" if not matches else "names more than one patient"
        raise Rejected(Code.UNKNOWN_KEY, f"MRG-1 {problem}", location=("MRG", 1, 1))
    return matches[0].res_id


async def moved(store: Store, ctx: AccessContext, retired: str, surviving_url: str) -> list[dict[str, Any]]:
    """Transaction entries updating each resource that refers to Patient/``retired``."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        pairs = [("_count", str(_PAGE)), *([("_cursor", cursor)] if cursor else [])]
        search = parse(None, pairs, supported_params, base=store.indexer.base, strict=True,
                       max_count=_PAGE, resource_types=SEARCHABLE)
        page, matches, _ = await store.search(ctx, search, query=urlencode(pairs), patient=retired)
        for version in matches:
            if version.res_type == "Patient" or version.body is None:
                continue
            entries.append(_update(version.res_type, version.res_id, version.version, version.body, retired,
                                   surviving_url, store.indexer.base))
        if len(entries) > MAX_MOVED:
            raise Rejected(Code.INTERNAL, f"the merge would move more than {MAX_MOVED} resources")
        cursor = page.next_cursor
        if cursor is None:
            return entries


def _update(res_type: str, res_id: str, version: int, body: bytes, retired: str, surviving: str,
            base: str) -> dict[str, Any]:
    resource = parse_json(body)
    old = {f"Patient/{retired}", f"{base}/Patient/{retired}"}
    _rewrite(resource, old, surviving)
    return {
        "fullUrl": f"{base}/{res_type}/{res_id}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"{res_type}/{res_id}", "ifMatch": f'W/"{version}"'},
    }


def _rewrite(value: Any, old: set[str], new: str) -> None:
    if isinstance(value, list):
        for item in value:
            _rewrite(item, old, new)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and item in old:
                value[key] = new
            else:
                _rewrite(item, old, new)

