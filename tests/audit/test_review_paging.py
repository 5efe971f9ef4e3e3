"""Paging AuditEvent searches: newest first, keyset cursors, every event exactly once even while new
events arrive between pages (each page request is itself a new event)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ehr.api.services import Services
from ehr.db.database import Database
from ehr.pki import DevPki
from ehr.settings import Settings
from tests.audit.helpers import events
from tests.audit.test_review import PATIENT, at, issue_pem
from tests.conftest import BASE, FixedClock, make_client, register

READS = 20


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", base_url=BASE, client_cache_seconds=0, page_size_default=4,
                    page_size_max=6)


@pytest.fixture
async def clients(services: Services, pki: DevPki) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(worker, reviewer); the worker created a Patient and read it READS times."""
    worker_pem, reviewer_pem = pki.client_cert.read_text(), issue_pem(pki, "reviewer")
    await register(services, worker_pem, "system/*.cruds", "worker")
    await register(services, reviewer_pem, "system/AuditEvent.rs", "reviewer")
    async with await make_client(services, worker_pem) as worker, await make_client(services, reviewer_pem) as rev:
        created = (await worker.post("Patient", json=PATIENT)).json()
        for _ in range(READS):
            assert (await worker.get(f"Patient/{created['id']}")).status_code == 200
        yield worker, rev


async def walk(client: httpx.AsyncClient, first: str, between: Any = None) -> list[dict[str, Any]]:
    """Every page from ``first`` on, following next links; ``between`` runs after each page."""
    pages, url = [], first
    while url:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        url = next((link["url"] for link in pages[-1]["link"] if link["relation"] == "next"), "")
        if between is not None:
            await between()
    return pages


def ids(pages: list[dict[str, Any]]) -> list[str]:
    return [entry["resource"]["id"] for page in pages for entry in page.get("entry", [])]


async def test_every_event_once_while_events_arrive(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], services: Services
) -> None:
    worker, reviewer = clients
    before = [e["id"] for e in await events(services.db, services.keys)][::-1]
    assert len(before) == 2 + 1 + READS

    async def more() -> None:
        await worker.get("Patient/whatever")  # a new event (a 404) between pages
        await worker.post("Patient", json=PATIENT)

    pages = await walk(reviewer, "AuditEvent?_count=5", more)
    assert ids(pages) == before  # all of them, once, newest first, none of those that came later
    assert [len(page["entry"]) for page in pages] == [5, 5, 5, 5, 3]
    assert pages[0]["total"] == len(before)
    assert pages[-1]["total"] > len(before)  # total is accurate at each request: it counts the newcomers
    recorded = [entry["resource"]["recorded"] for page in pages for entry in page["entry"]]
    assert recorded == sorted(recorded, reverse=True)


async def test_equal_times_are_ordered_by_arrival(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], services: Services, clock: FixedClock
) -> None:
    worker, reviewer = clients
    for _ in range(7):
        at(clock, "2026-06-01T12:00:00.000Z")
        await worker.get("Patient/same-instant")
    logged = await events(services.db, services.keys)
    same = [e["id"] for e in logged if e["recorded"] == "2026-06-01T12:00:00.000000Z"][::-1]
    assert len(same) == 7
    pages = await walk(reviewer, "AuditEvent?date=2026-06-01T12:00:00Z&_count=2")
    assert ids(pages) == same
    assert [len(page["entry"]) for page in pages] == [2, 2, 2, 1]


async def test_next_link_keeps_the_filters(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], services: Services
) -> None:
    worker, reviewer = clients
    await worker.post("Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    pages = await walk(reviewer, "AuditEvent?action=R&outcome=0&_count=6")
    assert len(ids(pages)) == len(set(ids(pages))) == READS
    assert all(entry["resource"]["action"] == "R" for page in pages for entry in page["entry"])
    first, second = pages[0]["link"], pages[1]["link"]
    assert first[0] == {"relation": "self", "url": f"{services.base}/AuditEvent?action=R&outcome=0&_count=6"}
    assert first[1]["url"].startswith(f"{services.base}/AuditEvent?action=R&outcome=0&_count=6&_cursor=")
    assert second[0]["url"] == first[1]["url"]  # a page's self link names its cursor


async def test_default_and_maximum_page_size(clients: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    _, reviewer = clients
    default = (await reviewer.get("AuditEvent")).json()
    assert len(default["entry"]) == 4 and default["link"][0]["url"].endswith("_count=4")
    capped = (await reviewer.get("AuditEvent", params={"_count": "1000"})).json()
    assert len(capped["entry"]) == 6 and capped["link"][0]["url"].endswith("_count=6")
    huge = (await reviewer.get("AuditEvent", params={"_count": "9" * 5000})).json()
    assert len(huge["entry"]) == 6


async def test_count_zero_gives_only_the_total(clients: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    _, reviewer = clients
    bundle = (await reviewer.get("AuditEvent", params={"_count": "0"})).json()
    assert bundle["total"] == 2 + 1 + READS
    assert bundle["entry"] == []
    assert [link["relation"] for link in bundle["link"]] == ["self"]


async def test_last_page_has_no_next(clients: tuple[httpx.AsyncClient, httpx.AsyncClient], db: Database) -> None:
    _, reviewer = clients
    bundle = (await reviewer.get("AuditEvent", params={"action": "C", "_count": "1"})).json()
    assert bundle["total"] == 1 and len(bundle["entry"]) == 1
    assert [link["relation"] for link in bundle["link"]] == ["self"]
