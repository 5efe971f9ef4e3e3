"""`ehr audit export` writes an archive that `verify-export` checks with no database and no secret; any
change to it (an event, a line, the order, the manifest, the signature, the key) is caught."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ehr.audit.events import Interaction
from ehr.audit.export import ExportReport, Format, _sign, export_audit, parse_instant, verify_export
from ehr.audit.log import AuditLog, chain_hash, checkpoint_message
from ehr.context import AccessContext, system_context
from ehr.crypto.canonical import canonical_json, parse_json
from ehr.crypto.keys import MemoryKeyStore
from ehr.db.database import Database
from ehr.errors import EhrError
from ehr.fhir.validator import validate
from smart_auth.scopes import Permissions
from tests.conftest import FixedClock

CTX = system_context("export-tests")
START = parse_instant("2026-01-01T00:00:00Z")  # the FixedClock's start
END = parse_instant("2026-01-02T00:00:00Z")
FORMATS: list[Format] = ["jsonl", "bundle"]
EVENTS = {"jsonl": "events.jsonl", "bundle": "events.json"}


_NOT_READY = {
    "postgresql": "SELECT count(*) AS n FROM audit_pending "
                  "WHERE xid >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
    "sqlite": "SELECT 0 AS n",
}


async def seal(audit: AuditLog, db: Database) -> None:
    """Chain everything pending in one batch (one checkpoint). On PostgreSQL a transaction of another
    session on the server (another test run) can hold the xmin horizon back for a moment: wait for it."""
    for _ in range(200):
        row = await db.fetch_one(_NOT_READY[db.dialect])
        if row is not None and row["n"] == 0:
            break
        await asyncio.sleep(0.05)
    await audit.seal()
    left = await db.fetch_one("SELECT count(*) AS n FROM audit_pending")
    assert left is not None and left["n"] == 0, "pending audit events were not sealed"


async def _ten_sealed(audit: AuditLog, db: Database) -> None:
    """Ten events, chained in two batches: checkpoints at positions 4 and 10."""
    for n in range(10):
        await audit.record(CTX, Interaction("read", "Patient", f"p{n}", patient=f"p{n}"))
        if n in (3, 9):
            await seal(audit, db)


async def _export(db: Database, keys: MemoryKeyStore, out: Path, fmt: Format = "jsonl",
                  since: int = START, until: int = END) -> ExportReport:
    return await export_audit(db, keys, out, since_us=since, until_us=until, fmt=fmt, now_us=END)


def _problems(out: Path, jwks: Any = None) -> list[str]:
    report = verify_export(out, jwks)
    return [f"{p.where}: {p.message}" for p in report.problems]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


# -- what a good export holds ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_export_then_verify_passes(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, tmp_path: Path, fmt: Format
) -> None:
    await _ten_sealed(audit, db)
    out = tmp_path / "export"
    written = await _export(db, keys, out, fmt)
    assert (written.events, written.links, written.checkpoints) == (10, 10, 2)
    report = verify_export(out)
    assert report.ok, report.problems
    assert (report.events, report.links, report.checkpoints, report.kid) == (10, 10, 2, keys.signer().kid)
    assert verify_export(out, keys.jwks()).ok  # the same, trusting a JWKS obtained out of band
    assert sorted(os.listdir(out)) == sorted(
        [EVENTS[fmt], "chain.jsonl", "checkpoints.jsonl", "jwks.json", "manifest.json", "manifest.jws"]
    )


async def test_bundle_is_a_valid_collection(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, tmp_path: Path
) -> None:
    await _ten_sealed(audit, db)
    await _export(db, keys, tmp_path / "b", "bundle")
    data = (tmp_path / "b" / "events.json").read_bytes()
    bundle = parse_json(data)
    assert canonical_json(bundle) == data
    assert (bundle["resourceType"], bundle["type"], len(bundle["entry"])) == ("Bundle", "collection", 10)
    assert bundle["entry"][0]["fullUrl"] == f"urn:uuid:{bundle['entry'][0]['resource']['id']}"
    assert validate(bundle) == []


async def test_export_is_private(audit: AuditLog, db: Database, keys: MemoryKeyStore, tmp_path: Path) -> None:
    await _ten_sealed(audit, db)
    out = tmp_path / "export"
    await _export(db, keys, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o600}


async def test_refuses_a_directory_in_use(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, tmp_path: Path
) -> None:
    await _ten_sealed(audit, db)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(EhrError, match="not an empty directory"):
        await _export(db, keys, tmp_path / "used")


async def test_part_of_a_batch_carries_links_to_the_covering_checkpoint(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, clock: FixedClock, tmp_path: Path
) -> None:
    await _ten_sealed(audit, db)
    rows = await db.fetch_all("SELECT recorded_us FROM audit_event ORDER BY seq")
    since, until = int(rows[2]["recorded_us"]), int(rows[6]["recorded_us"])  # positions 3..6
    out = tmp_path / "part"
    await _export(db, keys, out, since=since, until=until)
    report = verify_export(out)
    assert report.ok, report.problems
    assert (report.events, report.links, report.checkpoints) == (4, 8, 2)  # links 3..10, checkpoints 4 and 10
    links = [parse_json(line) for line in _lines(out / "chain.jsonl")]
    assert [(link["pos"], link["exported"]) for link in links] == [(p, p <= 6) for p in range(3, 11)]
    events = [parse_json(line) for line in _lines(out / "events.jsonl")]
    assert [e["entity"][0]["what"]["reference"] for e in events] == [f"Patient/p{n}" for n in range(2, 6)]


async def test_chain_order_differs_from_recorded_order(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, tmp_path: Path
) -> None:
    """An event whose transaction commits late is chained after later-recorded ones; the export takes
    exactly the events recorded in the range and links the others."""
    late = audit.prepare(CTX, Interaction("read", "Patient", "late"))   # recorded first ...
    await audit.record(CTX, Interaction("read", "Patient", "early"))   # ... committed second
    await db.execute_all(late.statements)
    await seal(audit, db)
    chain = await db.fetch_all("SELECT event_id FROM audit_chain ORDER BY pos")
    assert chain[1]["event_id"] == late.event_id
    early = await db.fetch_one("SELECT recorded_us FROM audit_event WHERE id = $1", chain[0]["event_id"])
    assert early is not None
    out = tmp_path / "late"
    await _export(db, keys, out, since=int(early["recorded_us"]))  # "early" only: "late" was recorded before
    report = verify_export(out)
    assert report.ok, report.problems
    assert (report.events, report.links) == (1, 2)  # "late" is a link to the checkpoint at 2, not an event
    assert parse_json(_lines(out / "events.jsonl")[0])["id"] == chain[0]["event_id"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_empty_range(audit: AuditLog, db: Database, keys: MemoryKeyStore, tmp_path: Path, fmt: Format) -> None:
    await _ten_sealed(audit, db)
    out = tmp_path / "empty"
    await _export(db, keys, out, fmt, since=END, until=END + 86_400_000_000)
    report = verify_export(out)
    assert report.ok, report.problems
    assert (report.events, report.links, report.checkpoints) == (0, 0, 0)
    assert parse_json((out / "manifest.json").read_bytes())["chain"] is None
    if fmt == "bundle":
        assert parse_json((out / EVENTS[fmt]).read_bytes()) == {"resourceType": "Bundle", "type": "collection"}


async def test_pending_events_are_counted_not_exported(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, tmp_path: Path
) -> None:
    await _ten_sealed(audit, db)
    await audit.record(CTX, Interaction("read", "Patient", "not-yet-chained"))
    report = await _export(db, keys, tmp_path / "e")
    assert (report.events, report.pending) == (10, 1)
    assert verify_export(tmp_path / "e").pending == 1


# -- canonical bytes survive the trip ----------------------------------------------------------------


async def test_exported_json_reproduces_the_hashed_bytes(
    db: Database, keys: MemoryKeyStore, clock: FixedClock, tmp_path: Path
) -> None:
    """Non-BMP characters, U+2028 (a line break to str.splitlines, not to JSON lines), quotes,
    backslashes and control characters survive export, parsing and canonicalisation byte for byte.
    (Events carry no numbers with a fraction: ehr/audit/log.py writes only str, int and bool values.)"""
    audit = AuditLog(db, keys, clock, source="https://ehr.test/fhir")
    names = ["Zoë Ångström", "🩺 clinic\u2028ward\u2029", 'quote " back \\ tab \t nul \x00 del \x7f',
             "\ud7ff\ue000\U0010ffff", "é (e + U+0301)"]
    for n, name in enumerate(names):
        ctx = AccessContext(actor=f"client-{n}", actor_display=name, permissions=Permissions(()))
        extra = {"what": {"display": name}, "detail": [{"type": "count", "valueString": str(n)}]}
        await audit.record(ctx, Interaction("read", "Patient", f"p{n}", outcome_desc=name, extra_entities=[extra]))
    await seal(audit, db)
    await _export(db, keys, tmp_path / "u")
    stored = {r["id"]: bytes(r["content_hash"]) for r in await db.fetch_all("SELECT id, content_hash FROM audit_event")}
    lines = _lines(tmp_path / "u" / "events.jsonl")
    assert len(lines) == len(names)
    for line, name in zip(lines, names, strict=True):
        event = parse_json(line)
        assert (event["agent"][0]["who"]["display"], event["outcomeDesc"]) == (name, name)
        assert canonical_json(event) == line
        assert hashlib.sha256(canonical_json(event)).digest() == stored[event["id"]]
    assert verify_export(tmp_path / "u").ok


# -- what verify-export catches ----------------------------------------------------------------------


@pytest.fixture
async def exported(audit: AuditLog, db: Database, keys: MemoryKeyStore, tmp_path: Path) -> Path:
    await _ten_sealed(audit, db)
    out = tmp_path / "export"
    await _export(db, keys, out)
    assert verify_export(out).ok
    return out


async def test_changed_event_is_caught(exported: Path) -> None:
    path = exported / "events.jsonl"
    lines = _lines(path)
    event = parse_json(lines[4])
    event["outcome"] = "8"
    _rewrite(path, [*lines[:4], canonical_json(event), *lines[5:]])
    found = _problems(exported)
    assert "events.jsonl: SHA-256 does not match the manifest (the file was changed)" in found
    assert f"events.jsonl line 5: event {event['id']} does not match its content hash in the chain " \
           "(it was changed)" in found


async def test_changed_bundle_entry_is_caught(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, tmp_path: Path
) -> None:
    await _ten_sealed(audit, db)
    out = tmp_path / "b"
    await _export(db, keys, out, "bundle")
    bundle = parse_json((out / "events.json").read_bytes())
    bundle["entry"][2]["resource"]["agent"][0]["who"]["display"] = "someone else"
    (out / "events.json").write_bytes(canonical_json(bundle))
    assert any("events.json entry 2: event" in p and "content hash" in p for p in _problems(out))


async def test_removed_event_is_caught(exported: Path) -> None:
    path = exported / "events.jsonl"
    lines = _lines(path)
    removed = parse_json(lines[3])["id"]
    _rewrite(path, lines[:3] + lines[4:])
    found = _problems(exported)
    assert any(p.startswith(f"events.jsonl line 4: expected event {removed}") for p in found), found


async def test_removed_last_event_is_caught(exported: Path) -> None:
    path = exported / "events.jsonl"
    lines = _lines(path)
    _rewrite(path, lines[:-1])
    assert any("is missing (removed)" in p for p in _problems(exported))


async def test_reordered_events_are_caught(exported: Path) -> None:
    path = exported / "events.jsonl"
    lines = _lines(path)
    lines[5], lines[6] = lines[6], lines[5]
    _rewrite(path, lines)
    assert any("events were removed, inserted or reordered" in p for p in _problems(exported))


async def test_inserted_event_is_caught(exported: Path) -> None:
    path = exported / "events.jsonl"
    _rewrite(path, [*_lines(path), _lines(path)[0]])
    assert "events.jsonl: 1 event(s) are not in the chain (inserted)" in _problems(exported)


async def test_changed_link_is_caught(exported: Path) -> None:
    path = exported / "chain.jsonl"
    lines = _lines(path)
    del lines[2]
    _rewrite(path, lines)
    found = _problems(exported)
    assert any("chain.jsonl line 3: position 4 where 3 was expected" in p for p in found), found


async def test_changed_manifest_is_caught(exported: Path) -> None:
    manifest = parse_json((exported / "manifest.json").read_bytes())
    manifest["counts"]["events"] = 9
    (exported / "manifest.json").write_bytes(canonical_json(manifest))
    found = _problems(exported)
    assert any(p.startswith("manifest.json: signature by") and "does not verify" in p for p in found), found


async def test_forged_signature_is_caught(exported: Path) -> None:
    header, _, signature = (exported / "manifest.jws").read_text().split(".")
    forged = ("A" if signature[0] != "A" else "B") + signature[1:]
    (exported / "manifest.jws").write_text(f"{header}..{forged}")
    assert any("does not verify" in p for p in _problems(exported))


async def test_forged_checkpoint_is_caught(exported: Path) -> None:
    path = exported / "checkpoints.jsonl"
    lines = _lines(path)
    checkpoint = parse_json(lines[0])
    checkpoint["ts"] += 1
    _rewrite(path, [canonical_json(checkpoint), *lines[1:]])
    assert "checkpoints.jsonl line 1: checkpoint 4: signature does not verify" in _problems(exported)


async def test_a_different_key_is_caught(exported: Path) -> None:
    other = MemoryKeyStore(seed=b"someone-else")
    found = _problems(exported, other.jwks())
    assert any("which is not in the given JWKS" in p for p in found), found


def _forge(out: Path, forger: MemoryKeyStore) -> None:
    """Rewrite the chain, checkpoints and manifest over events.jsonl as it now stands, signed by ``forger``."""
    previous = bytes.fromhex(parse_json((out / "manifest.json").read_bytes())["chain"]["previous"])
    links, heads = [], {}
    for line, link in zip(_lines(out / "events.jsonl"), map(parse_json, _lines(out / "chain.jsonl")), strict=True):
        content = hashlib.sha256(line).digest()
        previous = chain_hash(previous, link["pos"], link["event"], content)
        links.append(canonical_json({**link, "content": content.hex(), "hash": previous.hex()}))
        heads[link["pos"]] = previous
    _rewrite(out / "chain.jsonl", links)
    checkpoints = []
    for checkpoint in map(parse_json, _lines(out / "checkpoints.jsonl")):
        head = heads[checkpoint["pos"]]
        signature = forger.signer().sign(checkpoint_message(checkpoint["pos"], head, checkpoint["ts"]))
        checkpoints.append(canonical_json({**checkpoint, "hash": head.hex(), "kid": forger.signer().kid,
                                           "sig": base64.urlsafe_b64encode(signature).rstrip(b"=").decode()}))
    _rewrite(out / "checkpoints.jsonl", checkpoints)
    (out / "jwks.json").write_bytes(canonical_json(forger.jwks()))
    manifest = parse_json((out / "manifest.json").read_bytes())
    for name in manifest["files"]:
        manifest["files"][name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    manifest["kid"] = forger.signer().kid
    (out / "manifest.json").write_bytes(canonical_json(manifest))
    (out / "manifest.jws").write_text(_sign(forger.signer(), canonical_json(manifest)))


async def test_resigned_export_passes_only_against_the_shipped_jwks(exported: Path, keys: MemoryKeyStore) -> None:
    """Whoever can rewrite an export can re-sign all of it and ship their own JWKS: trusting the jwks.json
    inside proves integrity only relative to that key. A JWKS obtained out of band catches it."""
    path = exported / "events.jsonl"
    lines = _lines(path)
    event = parse_json(lines[0])
    event["outcome"] = "8"
    _rewrite(path, [canonical_json(event), *lines[1:]])
    _forge(exported, MemoryKeyStore(seed=b"forger"))
    assert _problems(exported) == []
    trusted = _problems(exported, keys.jwks())
    assert any(p.startswith("manifest.json: signed by key") and "not in the given JWKS" in p for p in trusted)
    assert any(p.startswith("checkpoints.jsonl line 1: checkpoint 4 is signed by key") for p in trusted), trusted


async def test_unreadable_export_is_reported(tmp_path: Path) -> None:
    found = _problems(tmp_path)
    assert len(found) == 1 and found[0].startswith("export: cannot read the manifest")


async def test_garbled_manifest_is_caught(exported: Path) -> None:
    (exported / "manifest.json").write_bytes(b'{"format": "something else"}')
    found = _problems(exported)
    assert "manifest.json: not a manifest of this format and version" in found
    assert any("does not verify" in p for p in found)


async def test_manifest_signature_is_a_standard_detached_jws(exported: Path, keys: MemoryKeyStore) -> None:
    """RFC 7515 Appendix F (detached content) with RFC 7797 (unencoded payload): any JOSE library
    can check it with the JWKS; the signing input is BASE64URL(header) || "." || manifest bytes."""
    header_b64, payload_part, signature_b64 = (exported / "manifest.jws").read_text().split(".")
    header = parse_json(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    assert payload_part == "" and header == {"alg": "EdDSA", "b64": False, "crit": ["b64"], "kid": keys.signer().kid}
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    manifest = (exported / "manifest.json").read_bytes()
    keys.signer().public_key().verify(signature, header_b64.encode() + b"." + manifest)  # raises if not
