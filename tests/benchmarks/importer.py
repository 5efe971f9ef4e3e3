"""Loading the search benchmark's record set into the real server the way a client would.

Transaction Bundles (R4 http.html#transaction: ``POST [base]`` with a Bundle of type transaction,
``urn:uuid:`` fullUrls, references between entries by those) when the server takes them: that is the
import measurement, in resources per second. The first Bundle goes alone and untimed, as a probe:
404, 405 or 501 means the server has no transactions yet, and every resource is then created by its
own ``POST`` instead (a transaction the server refuses otherwise is rolled back, so the same
fallback applies, but the refusal is a failure). Either way every resource takes the server's whole
write path: validation, versioning, signature, encryption, search index, AuditEvent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.benchmarks.dataset import Dataset, encode
from tests.benchmarks.load import (
    Check,
    Exchange,
    LoadResult,
    Target,
    checked,
    exchange_once,
    http_request,
    run_load,
)

PATIENTS_PER_BUNDLE = 10  # a Bundle: ten patients and their hundred observations
IMPORT_CONCURRENCY = 4  # Bundles in flight
CREATE_CONCURRENCY = 32
NOT_THERE = (404, 405, 501)
TRANSACTIONS = "/fhir"  # POST [base]


def time_limit(resources: int) -> float:
    """Generous: two minutes plus 10 ms a resource."""
    return 120 + resources * 0.01


@dataclass
class Import:
    method: str  # "transaction" or "create"
    resources: int = 0  # loaded while the clock ran
    results: list[LoadResult] = field(default_factory=list)
    unavailable: str | None = None  # why transaction Bundles were not used
    error: str | None = None  # a transaction Bundle the server took but answered wrongly, or refused

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    @property
    def resources_per_second(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self.results) + (1 if self.error else 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method, "resources": self.resources, "seconds": round(self.seconds, 3),
            "resources_per_second": round(self.resources_per_second, 1), "failures": self.failures,
            "patients_per_bundle": PATIENTS_PER_BUNDLE if self.method == "transaction" else None,
            "requests": [{"requests": r.requests, "concurrency": r.concurrency, "seconds": round(r.seconds, 3),
                          "p50_ms": round(r.percentile_ms(50), 2), "p99_ms": round(r.percentile_ms(99), 2),
                          "failures": r.failures, "statuses": {str(k): v for k, v in sorted(r.statuses.items())},
                          "errors": dict(r.errors), "wrong_answers": dict(r.wrong_answers)} for r in self.results],
            "transaction_unavailable": self.unavailable, "error": self.error,
        }


async def load_full(target: Target, dataset: Dataset) -> tuple[list[str | None], Import]:
    """Every resource into the real server; the server's id of each patient (None where it failed)."""
    ids: list[str | None] = [None] * len(dataset.patients)
    bundles = list(dataset.transaction_bundles(PATIENTS_PER_BUNDLE))
    (first, body), rest = bundles[0], bundles[1:]
    probe = await exchange_once(target, http_request("POST", TRANSACTIONS, body))
    if probe.status in NOT_THERE:
        done = Import("create", unavailable=f"POST {TRANSACTIONS} answered {probe.status} {_diagnostics(probe.body)}")
    elif probe.status != 200:
        done = Import("create", error=f"the first transaction answered {probe.status} {_diagnostics(probe.body)}")
    elif problem := checked(transaction_check(dataset, first, ids), probe.body):
        # committed but unreadable: creating its resources again would skew every expected total
        return ids, Import("transaction", error=f"the first transaction's response: {problem}")
    else:
        done = Import("transaction", resources=sum(_resources(dataset, held) for held, _ in rest))
        if rest:
            exchanges = [Exchange(http_request("POST", TRANSACTIONS, b), transaction_check(dataset, held, ids))
                         for held, b in rest]
            done.results.append(await run_load(target, exchanges, total=len(exchanges), concurrency=IMPORT_CONCURRENCY,
                                               expected_status=200, time_limit=time_limit(done.resources)))
        return ids, done
    await _create_all(target, dataset, ids, done)
    return ids, done


def transaction_check(dataset: Dataset, held: range, ids: list[str | None]) -> Check:
    """Checks a transaction-response (http.html#transaction-response: one entry per request entry, in
    order, each with a 201 status and a location) and records the patients' new ids."""
    kinds = [kind for n in held for kind in ["Patient"] + ["Observation"] * len(dataset.patients[n].observations)]

    def check(body: bytes) -> str | None:
        bundle = json.loads(body)
        if (bundle.get("resourceType"), bundle.get("type")) != ("Bundle", "transaction-response"):
            return "not a transaction-response Bundle"
        entries = bundle.get("entry", [])
        if len(entries) != len(kinds):
            return f"{len(entries)} response entries for {len(kinds)} requests"
        created = [_created(entry["response"], kind) for entry, kind in zip(entries, kinds, strict=True)]
        if None in created:
            return "an entry without a 201 status and a location of its type"
        patients = iter(n for n in held)
        for new_id, kind in zip(created, kinds, strict=True):
            if kind == "Patient":
                ids[next(patients)] = new_id
        return None

    return check


def _created(response: dict[str, Any], kind: str) -> str | None:
    """The id in ``response.location`` (``Patient/1/_history/1``, relative or absolute) if status is 201."""
    if not str(response.get("status", "")).startswith("201"):
        return None
    parts = str(response.get("location", "")).split("/")
    found = [parts[i + 1] for i in range(len(parts) - 1) if parts[i] == kind and parts[i + 1]]
    return found[-1] if found else None


async def _create_all(target: Target, dataset: Dataset, ids: list[str | None], done: Import) -> None:
    """One ``POST`` per resource at concurrency 32: the patients, then their observations."""
    patients = [Exchange(http_request("POST", "/fhir/Patient", encode(p.resource())), _keep_id(ids, n))
                for n, p in enumerate(dataset.patients)]
    await _create(target, patients, done)
    observations = [
        Exchange(http_request("POST", "/fhir/Observation", encode(o.resource(f"Patient/{ids[n]}"))),
                 _created_as("Observation"))
        for n, p in enumerate(dataset.patients) if ids[n] is not None for o in p.observations
    ]
    await _create(target, observations, done)


async def _create(target: Target, exchanges: Sequence[Exchange], done: Import) -> None:
    if exchanges:
        done.results.append(await run_load(target, exchanges, total=len(exchanges), concurrency=CREATE_CONCURRENCY,
                                           expected_status=201, time_limit=time_limit(len(exchanges))))
        done.resources += len(exchanges)


def _keep_id(ids: list[str | None], n: int) -> Check:
    def check(body: bytes) -> str | None:
        resource = json.loads(body)
        if resource.get("resourceType") != "Patient" or not resource.get("id"):
            return "the create did not answer the new Patient"
        ids[n] = str(resource["id"])
        return None

    return check


def _created_as(kind: str) -> Check:
    def check(body: bytes) -> str | None:
        resource = json.loads(body)
        answered = resource.get("resourceType") == kind and resource.get("id")
        return None if answered else f"the create did not answer the new {kind}"

    return check


def _resources(dataset: Dataset, held: range) -> int:
    return sum(1 + len(dataset.patients[n].observations) for n in held)


def _diagnostics(body: bytes) -> str:
    """The first issue's diagnostics of an OperationOutcome, if that is what came back."""
    try:
        issues = json.loads(body).get("issue", [])
        return f"({issues[0].get('diagnostics') or issues[0].get('code')})" if issues else ""
    except (ValueError, AttributeError, IndexError, TypeError):
        return f"({body[:120]!r})"
