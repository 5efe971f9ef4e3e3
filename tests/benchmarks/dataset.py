"""The search benchmark's record set, the requests that load it and the searches with their right answers.

Patients get a family name from ``families.txt`` (common US surnames), about twenty to a name at any
scale, so ``family=`` searches find a handful each (more where one name starts another: ``Wood``
also finds ``Woods``); a unique MRN; and ten vital-sign Observations (six LOINC codes) at daytime
hours between 2010 and 2025. Deterministic for a seed; rows stay small tuples until a request needs
their JSON. Expected answers follow R4 search semantics: a string matches case-insensitively at the
start (search.html#string), ``date=ge`` matches from the start of that UTC day (search.html#date).
"""

from __future__ import annotations

import bisect
import functools
import json
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5.99999.2"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PATIENTS_PER_FAMILY = 20
OBSERVATIONS_PER_PATIENT = 10
PAGE_SIZE = 50  # the server's default page size (Settings.page_size_default) and the bare baseline's
_FIRST = datetime(2010, 1, 1, tzinfo=UTC)
_DAYS = (datetime(2025, 12, 31, tzinfo=UTC) - _FIRST).days
_GIVEN = (("female", ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Susan", "Jessica", "Sarah", "Karen",
                      "Lisa", "Nancy", "Maria", "Ana", "Mei", "Aisha", "Emily", "Olivia", "Grace")),
          ("male", ("James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
                    "Carlos", "Juan", "Wei", "Omar", "Daniel", "Kevin", "Ethan", "Noah", "Samuel")))
# LOINC code, display, UCUM unit, plausible range
VITALS = (
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 95, 180),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 55, 110),
    ("8867-4", "Heart rate", "/min", 45, 130),
    ("29463-7", "Body weight", "kg", 3, 140),
    ("8302-2", "Body height", "cm", 45, 200),
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 60, 250),
)


@functools.cache
def families() -> tuple[str, ...]:
    lines = (Path(__file__).parent / "families.txt").read_text().splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


@dataclass(frozen=True, slots=True)
class Observation:
    vital: int  # index into VITALS
    when: str  # effectiveDateTime, UTC, seconds
    value: float

    def resource(self, subject: str) -> dict[str, Any]:
        code, display, unit, _, _ = VITALS[self.vital]
        return {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "subject": {"reference": subject}, "effectiveDateTime": self.when,
            "valueQuantity": {"value": self.value, "unit": unit, "system": UCUM, "code": unit},
        }


@dataclass(frozen=True, slots=True)
class Patient:
    family: str
    given: str
    gender: str
    birth_date: str
    mrn: str
    observations: tuple[Observation, ...]

    def resource(self) -> dict[str, Any]:
        return {
            "resourceType": "Patient", "active": True,
            "identifier": [{"use": "usual", "system": MRN_SYSTEM, "value": self.mrn}],
            "name": [{"use": "official", "family": self.family, "given": [self.given]}],
            "gender": self.gender, "birthDate": self.birth_date,
        }


@dataclass(frozen=True)
class Query:
    """A search and its right answer: the total, the matches on the first page, the included resources."""

    path: str
    total: int
    included: int = 0

    @property
    def matches(self) -> int:
        return min(self.total, PAGE_SIZE)


@dataclass(frozen=True)
class Dataset:
    patients: tuple[Patient, ...]

    @classmethod
    def generate(cls, patients: int, seed: int = 20260101) -> Dataset:
        rng = random.Random(seed)
        names = families()[: max(1, min(len(families()), patients // PATIENTS_PER_FAMILY))]
        return cls(tuple(_patient(rng, rng.choice(names), n) for n in range(patients)))

    @property
    def observations(self) -> int:
        return sum(len(p.observations) for p in self.patients)

    @property
    def resources(self) -> int:
        return len(self.patients) + self.observations

    def family_queries(self) -> list[Query]:
        """``Patient?family=`` for every family name in use."""
        ordered = sorted(p.family.lower() for p in self.patients)
        used = sorted({p.family for p in self.patients})
        return [Query(f"/fhir/Patient?family={quote(f)}", _prefixed(ordered, f.lower())) for f in used]

    def identifier_queries(self, count: int, seed: int = 1) -> list[Query]:
        """``Patient?identifier=`` (the MRN, no system) for ``count`` patients."""
        chosen = random.Random(seed).sample(self.patients, min(count, len(self.patients)))
        return [Query(f"/fhir/Patient?identifier={quote(p.mrn)}", 1) for p in chosen]

    def observation_queries(self, ids: Sequence[str], count: int, *, include: bool, seed: int = 2) -> list[Query]:
        """``Observation?patient=&code=&date=ge`` (with ``_include=Observation:patient`` if ``include``) for
        ``count`` patients, ``ids`` being the server's ids of the patients: a code the patient has, from
        the day of one of those observations, so every query finds at least one."""
        rng = random.Random(seed)
        queries = []
        for n in rng.sample(range(len(self.patients)), min(count, len(self.patients))):
            picked = rng.choice(self.patients[n].observations)
            day = picked.when[:10]
            total = sum(o.vital == picked.vital and o.when[:10] >= day for o in self.patients[n].observations)
            params = [("patient", ids[n]), ("code", f"{LOINC}|{VITALS[picked.vital][0]}"), ("date", f"ge{day}")]
            params += [("_include", "Observation:patient")] if include else []
            queries.append(Query(f"/fhir/Observation?{urlencode(params)}", total, 1 if include else 0))
        return queries

    def transaction_bundles(self, patients_per_bundle: int) -> Iterator[tuple[range, bytes]]:
        """Transaction Bundles (http.html#transaction) of ``patients_per_bundle`` patients with their
        observations, which refer to their patient by its ``urn:uuid:`` fullUrl; each with the range
        of patients it holds. A patient's entry comes before its observations."""
        for start in range(0, len(self.patients), patients_per_bundle):
            held = range(start, min(start + patients_per_bundle, len(self.patients)))
            yield held, encode(bundle([self.patients[n] for n in held], random.Random(start)))


def bundle(patients: Sequence[Patient], rng: random.Random) -> dict[str, Any]:
    entries = []
    for patient in patients:
        full_url = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        entries.append(_entry(full_url, patient.resource()))
        entries += [_entry(f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}", o.resource(full_url))
                    for o in patient.observations]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _entry(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def encode(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, separators=(",", ":")).encode()


def _patient(rng: random.Random, family: str, n: int) -> Patient:
    gender, given = rng.choice(_GIVEN)
    birth = _FIRST.replace(year=1930) + timedelta(days=rng.randrange(90 * 365))
    observations = tuple(_observation(rng) for _ in range(OBSERVATIONS_PER_PATIENT))
    return Patient(family, rng.choice(given), gender, birth.date().isoformat(), f"MRN-{n:08d}", observations)


def _observation(rng: random.Random) -> Observation:
    vital = rng.randrange(len(VITALS))
    when = _FIRST + timedelta(days=rng.randrange(_DAYS), hours=rng.randrange(8, 18), seconds=rng.randrange(3600))
    low, high = VITALS[vital][3:]
    return Observation(vital, when.strftime("%Y-%m-%dT%H:%M:%SZ"), round(rng.uniform(low, high), 1))


def _prefixed(ordered: list[str], prefix: str) -> int:
    """How many of the sorted strings start with ``prefix``."""
    return bisect.bisect_left(ordered, prefix + "\U0010ffff") - bisect.bisect_left(ordered, prefix)
