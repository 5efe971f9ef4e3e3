"""Compile the official FHIR R4 (4.0.1) definitions into the validator's tables.

Reads the StructureDefinitions, ValueSets and CodeSystems of
``hl7.fhir.r4.core-4.0.1.tgz`` (CC0) and writes ``ehr/fhir/data/r4_definitions.json``:

* ``primitives``: name -> JSON representation, regex (the
  ``http://hl7.org/fhir/StructureDefinition/regex`` extension on ``value``), limits;
* ``types``: every concrete resource, complex datatype and backbone element (named by
  its path, e.g. ``Patient.contact``) -> element name -> ``{min, max, type, ...}``.
  Choice elements are expanded (``value[x]`` -> ``valueString``, ``valueQuantity``...);
* ``resources``: the concrete resource type names;
* ``valuesets``: the codes of each ValueSet that a REQUIRED binding on a ``code``
  element uses, when the package enumerates it exactly.

Usage: ``python scripts/gen_r4_tables.py [path/to/hl7.fhir.r4.core-4.0.1.tgz]``.
The output is deterministic (sorted keys), so regenerating is a no-op diff.
"""

from __future__ import annotations

import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TGZ = ROOT / ".." / "shared" / "fhir" / "hl7.fhir.r4.core-4.0.1.tgz"
OUTPUT = ROOT / "ehr" / "fhir" / "data" / "r4_definitions.json"

Json = dict[str, Any]

REGEX_URL = "http://hl7.org/fhir/StructureDefinition/regex"
FHIR_TYPE_URL = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
INT32_MAX = 2**31 - 1
STRING_MAX_BYTES = 1024 * 1024

# JSON representation of each primitive (http://hl7.org/fhir/R4/json.html#primitive); the SD
# value types do not say it for positiveInt / unsignedInt (their value is System.String).
JSON_KIND = {"boolean": "boolean", "integer": "integer", "positiveInt": "integer",
             "unsignedInt": "integer", "decimal": "decimal"}
INT_RANGE = {"integer": (-(2**31), INT32_MAX), "positiveInt": (1, INT32_MAX),
             "unsignedInt": (0, INT32_MAX)}
# Strings are bounded at 1 MiB (R4 string: "SHALL NOT exceed 1MB"); binary and narrative
# can legitimately be larger and are bounded by the request size limit instead.
UNBOUNDED = {"base64Binary", "xhtml"}


def read_package(tgz: Path) -> Iterator[Json]:
    """Yield every resource at the top of the package (not package.json or .index.json)."""
    with tarfile.open(tgz, "r:gz") as archive:
        for member in archive:
            folder, _, name = member.name.partition("/")
            if folder != "package" or "/" in name or not name.endswith(".json"):
                continue
            handle = archive.extractfile(member)
            if handle is not None and name not in {"package.json", ".index.json"}:
                yield json.load(handle)


def primitive_table(sd: Json) -> Json:
    """The JSON kind, regex and limits of one primitive StructureDefinition."""
    name = sd["id"]
    value = next(e for e in sd["snapshot"]["element"] if e["path"] == f"{name}.value")
    extensions = value.get("type", [{}])[0].get("extension", [])
    regex = next((x["valueString"] for x in extensions if x["url"] == REGEX_URL), None)
    entry: Json = {"json": JSON_KIND.get(name, "string"), "regex": regex}
    if name in INT_RANGE:
        entry["range"] = list(INT_RANGE[name])
    if entry["json"] == "string" and name not in UNBOUNDED:
        entry["maxLength"] = STRING_MAX_BYTES
    return entry


def type_code(spec: Json) -> tuple[str, bool]:
    """(FHIR type name, is-extensible) of one ``type`` entry of an element."""
    code: str = spec["code"]
    if not code.startswith(SYSTEM_PREFIX):
        return code, True
    # Element.id, Extension.url, Resource.id: plain JSON values, no ``_name`` sibling.
    fhir_type = next(x["valueUrl"] for x in spec.get("extension", []) if x["url"] == FHIR_TYPE_URL)
    return str(fhir_type), False


def element_entries(
    element: Json, has_children: bool, resource_id: str | None
) -> Iterator[tuple[str, Json]]:
    """(JSON name, entry) pairs for one snapshot element; choices expand to one per type."""
    path: str = element["path"]
    name = path.rsplit(".", 1)[1]
    base: Json = {"min": element["min"], "max": element["max"]}
    if element.get("isSummary"):
        base["summary"] = True  # kept by _summary=true (http://hl7.org/fhir/R4/search.html#summary)
    if element["max"] not in ("1", "*"):
        raise ValueError(f"unexpected max {element['max']} on {path}")
    if has_children:
        yield name, base | {"type": path}
    elif "contentReference" in element:
        yield name, base | {"type": element["contentReference"].split("#", 1)[1]}
    elif name.endswith("[x]"):
        group = name[:-3]
        for spec in element["type"]:
            code, _ = type_code(spec)
            yield group + code[0].upper() + code[1:], base | {"type": code, "choice": group}
    else:
        code, extensible = type_code(element["type"][0])
        if path == resource_id:
            code = "id"  # Resource.id is an id (http://hl7.org/fhir/R4/resource.html#id)
        entry = base | {"type": code}
        if not extensible:
            entry["attribute"] = True
        yield name, entry


def structure_types(sd: Json) -> dict[str, dict[str, Json]]:
    """Type name -> elements, for the SD's root type and each of its backbone elements."""
    elements: list[Json] = sd["snapshot"]["element"]
    root: str = elements[0]["path"]
    paths = {e["path"] for e in elements}
    parents = {p.rsplit(".", 1)[0] for p in paths if "." in p}
    resource_id = f"{root}.id" if sd["kind"] == "resource" else None
    types: dict[str, dict[str, Json]] = {root: {}}
    for element in elements[1:]:
        path = element["path"]
        owner = path.rsplit(".", 1)[0]
        if path in parents:
            types[path] = {}
        for name, entry in element_entries(element, path in parents, resource_id):
            binding = element.get("binding", {})
            if entry["type"] == "code" and binding.get("strength") == "required":
                entry["binding"] = binding["valueSet"].split("|", 1)[0]
            types[owner][name] = entry
    return types


class Terminology:
    """Enumerates ValueSets from the package's ValueSet and CodeSystem resources."""

    def __init__(self, value_sets: dict[str, Json], code_systems: dict[str, Json]) -> None:
        self.value_sets = value_sets
        self.code_systems = code_systems

    def system_codes(self, url: str) -> set[str] | None:
        system = self.code_systems.get(url)
        if system is None or system.get("content") != "complete":
            return None
        return set(_concept_codes(system.get("concept", [])))

    def include_codes(self, include: Json, depth: int) -> set[str] | None:
        if "filter" in include:
            return None
        codes: set[str] | None = None
        if "concept" in include:
            codes = {c["code"] for c in include["concept"]}
        elif "system" in include:
            codes = self.system_codes(include["system"])
            if codes is None:
                return None
        for url in include.get("valueSet", []):
            imported = self.expand(url, depth + 1)
            if imported is None:
                return None
            codes = imported if codes is None else codes & imported
        return codes

    def expand(self, url: str, depth: int = 0) -> set[str] | None:
        """All codes of the ValueSet, or None when it cannot be enumerated exactly."""
        value_set = self.value_sets.get(url.split("|", 1)[0])
        if value_set is None or "compose" not in value_set or depth > 10:
            return None
        codes: set[str] = set()
        for include in value_set["compose"].get("include", []):
            part = self.include_codes(include, depth)
            if part is None:
                return None
            codes |= part
        for exclude in value_set["compose"].get("exclude", []):
            part = self.include_codes(exclude, depth)
            if part is None:
                return None
            codes -= part
        return codes or None


def _concept_codes(concepts: list[Json]) -> Iterator[str]:
    for concept in concepts:
        yield concept["code"]
        yield from _concept_codes(concept.get("concept", []))


def is_concrete(sd: Json, kind: str) -> bool:
    return bool(sd.get("kind") == kind and sd.get("derivation") == "specialization"
                and not sd.get("abstract"))


def compile_tables(resources: list[Json]) -> Json:
    """The whole table, from the package's resources."""
    sds = [r for r in resources if r.get("resourceType") == "StructureDefinition"]
    terminology = Terminology(
        {r["url"]: r for r in resources if r.get("resourceType") == "ValueSet"},
        {r["url"]: r for r in resources if r.get("resourceType") == "CodeSystem"},
    )
    primitives = {sd["id"]: primitive_table(sd) for sd in sds if sd["kind"] == "primitive-type"}
    concrete = [sd for sd in sds if is_concrete(sd, "resource") or is_concrete(sd, "complex-type")]
    types: dict[str, dict[str, Json]] = {}
    for sd in concrete:
        types.update(structure_types(sd))
    value_sets = bind_value_sets(types, terminology)
    check_references(types, set(primitives))
    return {
        "fhirVersion": "4.0.1",
        "primitives": primitives,
        "resources": sorted(sd["type"] for sd in concrete if sd["kind"] == "resource"),
        "types": types,
        "valuesets": value_sets,
    }


def bind_value_sets(types: dict[str, dict[str, Json]], terminology: Terminology) -> Json:
    """Expand every bound ValueSet; drop the bindings that cannot be enumerated."""
    value_sets: dict[str, list[str]] = {}
    for elements in types.values():
        for entry in elements.values():
            url = entry.get("binding")
            if url is None:
                continue
            codes = terminology.expand(url)
            if codes is None:
                del entry["binding"]
            else:
                value_sets[url] = sorted(codes)
    return value_sets


def check_references(types: dict[str, dict[str, Json]], primitives: set[str]) -> None:
    known = primitives | set(types) | {"Resource"}
    for name, elements in types.items():
        for element, entry in elements.items():
            if entry["type"] not in known:
                raise ValueError(f"{name}.{element}: unknown type {entry['type']}")


def render(tables: Json) -> str:
    """The deterministic file content: sorted keys, no spaces, ASCII."""
    return json.dumps(tables, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    tgz = Path(argv[1]) if len(argv) > 1 else DEFAULT_TGZ
    tables = compile_tables(list(read_package(tgz)))
    text = render(tables)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="ascii")
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {len(tables['resources'])} resources, "
          f"{len(tables['types'])} types, {len(tables['valuesets'])} value sets, {len(text)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
