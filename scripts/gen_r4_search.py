"""Compile the official FHIR R4 (4.0.1) SearchParameters into the search table.

Reads ``SearchParameter-*.json`` and ``CompartmentDefinition-patient.json`` of
``hl7.fhir.r4.core-4.0.1.tgz`` (CC0) and writes ``ehr/fhir/data/r4_search.json``:

* ``params``: base type -> the parameters of that type, sorted by code: ``code``, ``type``, ``url``,
  ``expression`` (the alternatives of the official union that apply to the base: the official
  expressions are shared by many bases, ``A.x | B.y.where(resolve() is Patient)``), ``targets``,
  ``description`` (its first sentence) and, for composites, ``components`` (code, type and the
  relative expression of each). Base ``Resource`` holds the parameters of every resource type.
* ``compartments.Patient``: resource type -> the codes of the parameters that put a resource in a
  patient's compartment (http://hl7.org/fhir/R4/compartmentdefinition-patient.html).
* ``omitted``: SearchParameter id -> why it is not in ``params`` (or not for some of its bases).

A kept parameter lists in ``unindexed`` the FHIR types its expression can yield that its type has
no single value for (``Range`` on a quantity, ``SampledData``, ``Attachment`` on a reference...).

A parameter is kept only when every expression compiles (:mod:`ehr.fhir.search.fhirpath`) and can
yield a value its type indexes (:mod:`ehr.fhir.search.convert`), so what the table lists is exactly
what the server can search.

Usage: ``python scripts/gen_r4_search.py [path/to/hl7.fhir.r4.core-4.0.1.tgz]``.
The output is deterministic (sorted keys), so regenerating is a no-op diff.
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from ehr.fhir.search.convert import converters
from ehr.fhir.search.fhirpath import FhirPathError, compile_path
from ehr.fhir.search.fhirpath_syntax import alternatives, tokenize
from ehr.fhir.search.fhirtypes import resource_types
from ehr.fhir.search.values import ParamType

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TGZ = ROOT / ".." / "shared" / "fhir" / "hl7.fhir.r4.core-4.0.1.tgz"
OUTPUT = ROOT / "ehr" / "fhir" / "data" / "r4_search.json"
CORE = "http://hl7.org/fhir/SearchParameter/"
ANY_RESOURCE = "Resource"

Json = dict[str, Any]


class Omitted(Exception):
    """A parameter (or one base of it) that cannot be indexed, and why."""


def read_package(tgz: Path) -> Iterator[Json]:
    """The SearchParameters and the patient CompartmentDefinition of the package."""
    with tarfile.open(tgz, "r:gz") as archive:
        for member in archive:
            name = member.name.removeprefix("package/")
            wanted = name.startswith("SearchParameter-") or name == "CompartmentDefinition-patient.json"
            handle = archive.extractfile(member) if wanted and "/" not in name else None
            if handle is not None:
                yield json.load(handle)


def skip_reason(sp: Json) -> str | None:
    """Why a SearchParameter is not a candidate at all."""
    if sp["id"].startswith("example") or not sp["url"].startswith(CORE):
        return "an example, not a parameter of the core specification"
    if sp["type"] == "special":
        return "type special: needs its own implementation (near: geo distance, _filter: a query language)"
    if "expression" not in sp:
        return "no FHIRPath expression (_content, _text, _query and extension parameters without one)"
    if not sp.get("base"):
        return "no base resource type"
    return None


def applies_to(alternative: str, base: str) -> bool:
    """An alternative applies to the base it starts with (``Base.x``, ``(Base.x as T)``, ``Base``);
    one that starts with an element name is relative to every base."""
    first = next(text for kind, text, _ in tokenize(alternative) if kind == "ident")
    return first == base or first[:1].islower()


def description(text: str, base: str) -> str:
    """The first sentence of the description, of the base's own line in a shared description."""
    own = re.search(rf"^\* \[{base}\]\([^)]*\): *(.*)$", text, re.MULTILINE)
    line = (own.group(1) if own else text).strip().splitlines()[0] if text.strip() else ""
    return re.split(r"(?<=[a-z0-9)]\.)(?<!e\.g\.)(?<!i\.e\.)\s", line, maxsplit=1)[0].strip()


def contexts(base: str) -> list[str]:
    return sorted(resource_types()) if base == ANY_RESOURCE else [base]


def checked_types(expression: str, context: list[str], resource: str, param_type: str) -> frozenset[str]:
    """The FHIR types ``expression`` yields; :class:`Omitted` when it cannot compile or can yield
    nothing a ``param_type`` parameter indexes."""
    try:
        types = compile_path(expression, context, resource).types
    except FhirPathError as error:
        raise Omitted(f"{expression!r} for {resource}: {error}") from None
    if param_type != "composite" and not types & indexable(param_type):
        raise Omitted(f"{expression!r} yields only {sorted(types)}, nothing a {param_type} parameter indexes")
    return types


def indexable(param_type: str) -> frozenset[str]:
    return frozenset(converters(cast(ParamType, param_type)))


def components(sp: Json, by_url: dict[str, Json], base_types: frozenset[str], resource: str) -> list[Json]:
    found = []
    for component in sp["component"]:
        definition = by_url.get(component["definition"])
        if definition is None:
            raise Omitted(f"component {component['definition']} is not in the package")
        checked_types(component["expression"], sorted(base_types), resource, definition["type"])
        found.append({"code": definition["code"], "type": definition["type"], "expression": component["expression"]})
    return found


def targets(sp: Json, expression: str) -> list[str]:
    """The param's targets, narrowed to the ``resolve() is T`` filters when every alternative has one."""
    declared = set(sp.get("target", ()))
    parts = alternatives(expression)
    filters = [re.search(r"where\(resolve\(\) is (\w+)\)", part) for part in parts]
    if parts and all(filters):
        declared &= {match.group(1) for match in filters if match}
    return sorted(declared)


def param_entry(sp: Json, base: str, by_url: dict[str, Json]) -> Json:
    expression = " | ".join(a for a in alternatives(sp["expression"]) if applies_to(a, base))
    if not expression:
        raise Omitted(f"no part of the expression applies to {base}")
    entry: Json = {"code": sp["code"], "type": sp["type"], "url": sp["url"], "expression": expression,
                   "description": description(sp.get("description", ""), base)}
    for resource in contexts(base):
        types = checked_types(expression, [resource], resource, sp["type"])
        if sp["type"] == "composite":
            entry["components"] = components(sp, by_url, types, resource)
        elif types - indexable(sp["type"]):
            entry["unindexed"] = sorted(types - indexable(sp["type"]))  # e.g. Range on a quantity
    if sp.get("target"):
        entry["targets"] = targets(sp, expression)
    return entry


def compile_search(resources: list[Json]) -> Json:
    """The whole table, from the package's SearchParameters and patient CompartmentDefinition."""
    sps = sorted((r for r in resources if r["resourceType"] == "SearchParameter"), key=lambda r: r["id"])
    by_url = {sp["url"]: sp for sp in sps}
    params: dict[str, list[Json]] = {}
    omitted: dict[str, str] = {}
    for sp in sps:
        reason = skip_reason(sp)
        reasons = [reason] if reason else []
        for base in [] if reason else sp["base"]:
            try:
                params.setdefault(base, []).append(param_entry(sp, base, by_url))
            except Omitted as error:
                reasons.append(f"{base}: {error}")
        if reasons:
            omitted[sp["id"]] = "; ".join(reasons)
    for entries in params.values():
        entries.sort(key=lambda e: e["code"])
    compartment = next(r for r in resources if r["resourceType"] == "CompartmentDefinition")
    patient = {r["code"]: r["param"] for r in compartment["resource"] if r.get("param")}
    return {"fhirVersion": "4.0.1", "params": params, "omitted": omitted, "compartments": {"Patient": patient}}


def check_compartment(tables: Json) -> list[str]:
    """Compartment parameters that are not in the table (they cannot place a resource)."""
    missing: list[str] = []
    for resource, codes in tables["compartments"]["Patient"].items():
        known = {e["code"] for e in tables["params"].get(resource, [])}
        missing.extend(f"{resource}.{code}" for code in codes if code not in known and code != "{def}")
    return missing


def render(tables: Json) -> str:
    """The deterministic file content: sorted keys, no spaces, ASCII."""
    return json.dumps(tables, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    tgz = Path(argv[1]) if len(argv) > 1 else DEFAULT_TGZ
    tables = compile_search(list(read_package(tgz)))
    text = render(tables)
    OUTPUT.write_text(text, encoding="ascii")
    count = sum(len(entries) for entries in tables["params"].values())
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {count} parameters on {len(tables['params'])} bases, {len(text)} bytes")
    for sp_id, reason in sorted(tables["omitted"].items()):
        print(f"omitted {sp_id}: {reason}")
    for name in check_compartment(tables):
        print(f"compartment parameter not indexed: {name}")
    for base, entries in sorted(tables["params"].items()):
        for entry in entries:
            if "unindexed" in entry:
                print(f"partly indexed {base}.{entry['code']}: not {', '.join(entry['unindexed'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
