"""``ehr audit export`` and ``ehr audit verify-export``: an archive of the audit log that a third party
checks with no database and no secret (docs/adr/0006-audit-log.md, "Export").

An export of [since, until) is a directory:

  events.jsonl      the decrypted AuditEvents recorded in the range, in chain order: each line is the
  | events.json     event's canonical JSON (ehr/crypto/canonical.py), exactly the bytes that were
                    hashed; or (--format bundle) a FHIR R4 ``collection`` Bundle of them
  chain.jsonl       one link per chain position from the first exported event to the first signed
                    checkpoint at or after the last one: {"pos", "event", "content", "hash", "exported"};
                    links of events outside the range (chained in between, or up to that checkpoint)
                    carry their content hash but not the event
  checkpoints.jsonl the signed checkpoints in that span: {"pos", "hash", "ts", "kid", "sig"}
  jwks.json         the server's public signing keys (KeyStore.jwks())
  manifest.json     canonical JSON: format, range, counts, the chain hash before the first link, every
                    other file with its SHA-256, and the key id
  manifest.jws      RFC 7515 detached JWS over manifest.json (RFC 7797 unencoded payload, EdDSA)

A receiver recomputes ``chain_hash`` (ehr/audit/log.py) link by link from the manifest's "previous";
each exported event's SHA-256 of ``canonical_json(parse_json(event))`` must be its link's content hash,
and each checkpoint's Ed25519 signature over ``checkpoint_message`` must verify and name the hash just
recomputed at its position. The last link carries a checkpoint, so the whole span is signed.
Hashes are lowercase hex, signatures unpadded base64url.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ehr.audit.log import GENESIS, aad, chain_hash, checkpoint_message
from ehr.audit.verify import Problem
from ehr.crypto.canonical import InvalidJSON, canonical_json, parse_json
from ehr.crypto.envelope import DecryptionError, Sealed, open_sealed
from ehr.crypto.keys import KeyStore
from ehr.crypto.signing import Signer
from ehr.db.database import Database, Row
from ehr.errors import Category, EhrError
from ehr.store.records import instant

Format = Literal["jsonl", "bundle"]
FORMAT = "ehr-audit-export"
VERSION = 1
EVENTS_FILE: dict[str, str] = {"jsonl": "events.jsonl", "bundle": "events.json"}
_PAGE = 1000
_SPAN = (
    "SELECT min(c.pos) AS first, max(c.pos) AS last FROM audit_chain c JOIN audit_event e ON e.id = c.event_id "
    "WHERE e.recorded_us >= $1 AND e.recorded_us < $2"
)
_PENDING = (
    "SELECT count(*) AS n FROM audit_pending p JOIN audit_event e ON e.id = p.event_id "
    "WHERE e.recorded_us >= $1 AND e.recorded_us < $2"
)
_LINKS = (
    "SELECT c.pos, c.event_id, c.hash AS chain_hash, e.id AS found, e.recorded_us, e.content_hash, e.kek_id, "
    "e.wrapped_key, e.nonce, e.ciphertext FROM audit_chain c LEFT JOIN audit_event e ON e.id = c.event_id "
    "WHERE c.pos > $1 AND c.pos <= $2 ORDER BY c.pos LIMIT $3"
)


@dataclass(frozen=True, slots=True)
class Span:
    first: int          # chain position of the first exported event
    last: int           # the covering checkpoint's position (>= the last exported event's)
    previous: bytes     # chain hash at first - 1


@dataclass(slots=True)
class ExportReport:
    events: int = 0
    links: int = 0
    checkpoints: int = 0
    pending: int = 0    # recorded in the range but not chained yet: not in the export
    kid: str | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_instant(text: str) -> int:
    """An ISO 8601 date or date-time as microseconds since the epoch; no offset means UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise EhrError(Category.INVALID, f"not an ISO 8601 date-time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# =============================================================================================
# Export


async def export_audit(
    db: Database, keys: KeyStore, out: Path, *, since_us: int, until_us: int, fmt: Format, now_us: int
) -> ExportReport:
    """Write the export of [since, until) into ``out`` (which must not exist, or be empty)."""
    if until_us <= since_us:
        raise EhrError(Category.INVALID, "--until must be later than --since")
    span = await _span(db, since_us, until_us)
    pending = await db.fetch_one(_PENDING, since_us, until_us)
    signer = keys.signer()
    created = _new_directory(out)
    try:
        report = await _write(db, keys, out, span, since_us, until_us, fmt)
        report.pending, report.kid = (int(pending["n"]) if pending else 0), signer.kid
        manifest = _manifest(out, report, span, since_us, until_us, fmt, now_us)
        _write_new(out / "manifest.json", manifest)
        _write_new(out / "manifest.jws", _sign(signer, manifest).encode())
        _fsync_directory(out)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # our own half-written output, holding ePHI
        raise
    return report


async def _span(db: Database, since_us: int, until_us: int) -> Span | None:
    found = await db.fetch_one(_SPAN, since_us, until_us)
    if found is None or found["first"] is None:
        return None
    first, last = int(found["first"]), int(found["last"])
    covering = await db.fetch_one("SELECT pos FROM audit_checkpoint WHERE pos >= $1 ORDER BY pos LIMIT 1", last)
    if covering is None:
        raise EhrError(Category.INTERNAL, f"chain position {last} has no signed checkpoint yet; seal, then export")
    previous = GENESIS
    if first > 1:
        row = await db.fetch_one("SELECT hash FROM audit_chain WHERE pos = $1", first - 1)
        if row is None:
            raise _damaged(first - 1, "is missing")
        previous = bytes(row["hash"])
    return Span(first, int(covering["pos"]), previous)


async def _write(
    db: Database, keys: KeyStore, out: Path, span: Span | None, since_us: int, until_us: int, fmt: Format
) -> ExportReport:
    report = ExportReport()
    with (
        _create(out / EVENTS_FILE[fmt]) as events_file,
        _create(out / "chain.jsonl") as chain_file,
        _create(out / "checkpoints.jsonl") as checkpoints_file,
    ):
        events = _EventWriter(events_file, fmt)
        if span is not None:
            async for link, body in _links(db, keys, span, since_us, until_us):
                chain_file.write(canonical_json(link) + b"\n")
                report.links += 1
                if body is not None:
                    events.add(link["event"], body)
                    report.events += 1
            for checkpoint in await _checkpoints(db, span):
                checkpoints_file.write(canonical_json(checkpoint) + b"\n")
                report.checkpoints += 1
        events.close()
    _write_new(out / "jwks.json", canonical_json(keys.jwks()))
    return report


async def _links(
    db: Database, keys: KeyStore, span: Span, since_us: int, until_us: int
) -> AsyncIterator[tuple[dict[str, Any], bytes | None]]:
    """Each link of the span, checked against the database's chain, with the event's bytes when exported."""
    previous, expected = span.previous, span.first
    while expected <= span.last:
        rows = await db.fetch_all(_LINKS, expected - 1, span.last, _PAGE)
        for row in rows:
            pos = int(row["pos"])
            if pos != expected or row["found"] is None:
                raise _damaged(expected, "is missing")
            content = bytes(row["content_hash"])
            previous = chain_hash(previous, pos, row["event_id"], content)
            if previous != bytes(row["chain_hash"]):
                raise _damaged(pos, "does not match its hash")
            exported = since_us <= int(row["recorded_us"]) < until_us
            body = _open_event(keys, row, content) if exported else None
            yield {"pos": pos, "event": row["event_id"], "content": content.hex(),
                   "hash": previous.hex(), "exported": exported}, body
            expected = pos + 1
        if not rows:
            raise _damaged(expected, "is missing")


def _open_event(keys: KeyStore, row: Row, content: bytes) -> bytes:
    sealed = Sealed(row["kek_id"], bytes(row["wrapped_key"]), bytes(row["nonce"]), bytes(row["ciphertext"]))
    try:
        body = open_sealed(keys, sealed, aad(row["event_id"]))
    except DecryptionError:
        raise _damaged(int(row["pos"]), "does not decrypt") from None
    if hashlib.sha256(body).digest() != content:
        raise _damaged(int(row["pos"]), "does not match its content hash")
    if canonical_json(parse_json(body)) != body:  # what a receiver will recompute from the export
        raise _damaged(int(row["pos"]), "is not in canonical form")
    return body


async def _checkpoints(db: Database, span: Span) -> list[dict[str, Any]]:
    rows = await db.fetch_all(
        "SELECT * FROM audit_checkpoint WHERE pos >= $1 AND pos <= $2 ORDER BY pos", span.first, span.last
    )
    return [{"pos": int(r["pos"]), "hash": bytes(r["hash"]).hex(), "ts": int(r["ts_us"]), "kid": r["sig_kid"],
             "sig": _b64(bytes(r["signature"]))} for r in rows]


def _damaged(pos: int, what: str) -> EhrError:
    return EhrError(Category.INTERNAL, f"audit chain position {pos} {what}; run `ehr audit verify`")


class _EventWriter:
    """Events as JSON lines, or streamed into a canonical Bundle (keys in order: entry, resourceType, type)."""

    def __init__(self, out: IO[bytes], fmt: Format) -> None:
        self._out, self._fmt, self._count = out, fmt, 0

    def add(self, event_id: str, body: bytes) -> None:
        if self._fmt == "jsonl":
            self._out.write(body + b"\n")
        else:
            self._out.write(b',{"fullUrl":' if self._count else b'{"entry":[{"fullUrl":')
            self._out.write(canonical_json(f"urn:uuid:{event_id}") + b',"resource":' + body + b"}")
        self._count += 1

    def close(self) -> None:
        if self._fmt == "bundle":
            self._out.write(b"]," if self._count else b"{")  # FHIR allows no empty arrays (ele-1)
            self._out.write(b'"resourceType":"Bundle","type":"collection"}')


def _manifest(
    out: Path, report: ExportReport, span: Span | None, since_us: int, until_us: int, fmt: Format, now_us: int
) -> bytes:
    names = [EVENTS_FILE[fmt], "chain.jsonl", "checkpoints.jsonl", "jwks.json"]
    return canonical_json({
        "format": FORMAT,
        "version": VERSION,
        "created": instant(now_us),
        "range": {"since": instant(since_us), "until": instant(until_us)},
        "events": {"file": EVENTS_FILE[fmt], "format": fmt},
        "counts": {"events": report.events, "links": report.links, "checkpoints": report.checkpoints,
                   "pending": report.pending},
        "chain": None if span is None else {"first": span.first, "last": span.last, "previous": span.previous.hex()},
        "files": {name: _sha256_file(out / name) for name in names},
        "kid": report.kid,
    })


# =============================================================================================
# RFC 7515 detached JWS with an unencoded payload (RFC 7797): signs "<header>." + manifest bytes


def _sign(signer: Signer, payload: bytes) -> str:
    header = _b64(canonical_json({"alg": "EdDSA", "b64": False, "crit": ["b64"], "kid": signer.kid}))
    return f"{header}..{_b64(signer.sign(header.encode() + b'.' + payload))}"


def _check_jws(jws: str, payload: bytes, trusted: dict[str, Ed25519PublicKey], source: str) -> tuple[str | None, str]:
    """(kid, "") when the signature verifies, else (kid or None, what is wrong)."""
    parts = jws.strip().split(".")
    if len(parts) != 3 or parts[1]:
        return None, "manifest.jws is not a detached JWS (header..signature)"
    try:
        header = parse_json(_unb64(parts[0]))
        signature = _unb64(parts[2])
    except (ValueError, InvalidJSON):
        return None, "manifest.jws is malformed"
    if not isinstance(header, dict) or header.get("alg") != "EdDSA" or header.get("b64") is not False \
            or header.get("crit") != ["b64"]:
        return None, "manifest.jws: unsupported header (expected EdDSA, b64 false)"
    kid = header.get("kid")
    key = trusted.get(kid) if isinstance(kid, str) else None
    if key is None:
        return None, f"signed by key {kid!r}, which is not in the {source} JWKS"
    try:
        key.verify(signature, parts[0].encode() + b"." + payload)
    except InvalidSignature:
        return kid, f"signature by {kid} does not verify (the manifest or its signature was changed)"
    return kid, ""


def load_jwks(path: Path) -> Any:
    """A JWKS file obtained out of band, for ``verify-export --jwks``."""
    try:
        return parse_json(path.read_bytes())
    except (OSError, InvalidJSON) as err:
        raise EhrError(Category.INVALID, f"cannot read the JWKS {path}: {err}") from None


def public_keys(jwks: Any) -> dict[str, Ed25519PublicKey]:
    """The OKP/Ed25519 keys of a JWKS (RFC 7517, RFC 8037) by kid; anything else is ignored."""
    found: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", []) if isinstance(jwks, dict) else []:
        if isinstance(jwk, dict) and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            try:
                found[str(jwk["kid"])] = Ed25519PublicKey.from_public_bytes(_unb64(str(jwk["x"])))
            except (KeyError, ValueError):
                continue
    return found


# =============================================================================================
# Verify


def verify_export(directory: Path, jwks: Any | None = None) -> ExportReport:
    """Check an export with nothing but its files; ``jwks`` (obtained out of band) replaces jwks.json as
    the trust root. Trusting the jwks.json inside proves integrity only relative to that key."""
    report = ExportReport()
    try:
        payload = (directory / "manifest.json").read_bytes()
        jws = (directory / "manifest.jws").read_text("ascii")
        trusted = public_keys(jwks if jwks is not None else parse_json((directory / "jwks.json").read_bytes()))
    except (OSError, UnicodeDecodeError, InvalidJSON) as err:
        report.problems.append(Problem("export", f"cannot read the manifest, its signature or the JWKS: {err}"))
        return report
    report.kid, message = _check_jws(jws, payload, trusted, "given" if jwks is not None else "exported")
    if message:
        report.problems.append(Problem("manifest.json", message))
    try:
        manifest = _manifest_fields(parse_json(payload))
    except (InvalidJSON, EhrError, KeyError, TypeError, ValueError):
        report.problems.append(Problem("manifest.json", "not a manifest of this format and version"))
        return report
    if report.kid is not None and manifest.get("kid") != report.kid:
        named = manifest.get("kid")
        report.problems.append(Problem("manifest.json", f"names key {named!r} but is signed by {report.kid}"))
    report.problems += _check_files(directory, manifest["files"])
    _Walk(directory, manifest, trusted, report).run()
    return report


def _manifest_fields(manifest: Any) -> dict[str, Any]:
    if manifest["format"] != FORMAT or manifest["version"] != VERSION:
        raise ValueError("format")
    fmt = manifest["events"]["format"]
    required = {EVENTS_FILE[fmt], "chain.jsonl", "checkpoints.jsonl", "jwks.json"}
    if manifest["events"]["file"] != EVENTS_FILE[fmt] or not required <= set(manifest["files"]):
        raise ValueError("files")
    manifest["since_us"] = parse_instant(manifest["range"]["since"])
    manifest["until_us"] = parse_instant(manifest["range"]["until"])
    chain = manifest["chain"]
    if chain is not None:
        previous = bytes.fromhex(chain["previous"])
        manifest["chain"] = {"first": int(chain["first"]), "last": int(chain["last"]), "previous": previous}
    if not isinstance(manifest["counts"], dict):
        raise ValueError("counts")
    return dict(manifest)


def _check_files(directory: Path, files: dict[str, Any]) -> list[Problem]:
    problems = []
    for name, digest in files.items():
        path = directory / name
        if "/" in name or name.startswith(".") or not path.is_file():
            problems.append(Problem(name, "listed in the manifest but missing"))
        elif _sha256_file(path) != digest:
            problems.append(Problem(name, "SHA-256 does not match the manifest (the file was changed)"))
    return problems


class _Walk:
    """One pass over chain.jsonl, with the events and checkpoints consumed in step."""

    def __init__(self, directory: Path, manifest: dict[str, Any], keys: dict[str, Ed25519PublicKey],
                 report: ExportReport) -> None:
        self.manifest, self.keys, self.report = manifest, keys, report
        self.events_name = manifest["events"]["file"]
        self.events = _read_events(directory / self.events_name, manifest["events"]["format"])
        self.checkpoints = _read_lines(directory / "checkpoints.jsonl")
        self.pending_checkpoint = next(self.checkpoints, None)
        self.links = _read_lines(directory / "chain.jsonl")
        self.in_step = True   # events still line up with the chain

    def problem(self, where: str, message: str) -> None:
        self.report.problems.append(Problem(where, message))

    def run(self) -> None:
        chain = self.manifest["chain"]
        previous = chain["previous"] if chain else GENESIS
        expected = chain["first"] if chain else 1
        last_checked = None
        for where, link in self.links:
            try:
                previous, last_checked = self.link(where, link, expected, previous)
            except (KeyError, TypeError, ValueError):
                self.problem(where, "not a chain link")
                continue
            expected += 1
        self.finish(chain, expected - 1, last_checked)

    def link(self, where: str, link: Any, expected: int, previous: bytes) -> tuple[bytes, int | None]:
        pos, event_id, content, recorded = link["pos"], link["event"], bytes.fromhex(link["content"]), \
            bytes.fromhex(link["hash"])
        self.report.links += 1
        if pos != expected:
            self.problem(where, f"position {pos} where {expected} was expected (links removed, inserted or reordered)")
        if chain_hash(previous, pos, event_id, content) != recorded:
            self.problem(where, f"chain hash at position {pos} does not follow from the link before it")
        if link["exported"] is True:
            self.event(pos, event_id, content)
        return recorded, self.checkpoint(pos, recorded)

    def event(self, pos: int, event_id: str, content: bytes) -> None:
        if not self.in_step:
            return
        where, event = next(self.events, (self.events_name, None))
        if event is None:
            self.problem(where, f"event {event_id} (chain {pos}) is missing (removed)")
            self.in_step = False
        elif isinstance(event, _Invalid):
            self.problem(where, f"event {event_id} (chain {pos}) is not valid JSON: {event.reason}")
        elif not isinstance(event, dict) or event.get("id") != event_id:
            shown = event.get("id") if isinstance(event, dict) else None
            self.problem(where, f"expected event {event_id} (chain {pos}), found {shown!r}: events were removed, "
                                "inserted or reordered")
            self.in_step = False
        else:
            self.report.events += 1
            if hashlib.sha256(canonical_json(event)).digest() != content:
                self.problem(where, f"event {event_id} does not match its content hash in the chain (it was changed)")
            if not self.in_range(event.get("recorded")):
                self.problem(where, f"event {event_id} was not recorded in the exported range")

    def in_range(self, recorded: Any) -> bool:
        try:
            return bool(self.manifest["since_us"] <= parse_instant(str(recorded)) < self.manifest["until_us"])
        except EhrError:
            return False

    def checkpoint(self, pos: int, head: bytes) -> int | None:
        """Check the checkpoint at ``pos``, if there is one; returns ``pos`` when there was."""
        while self.pending_checkpoint is not None:
            where, checkpoint = self.pending_checkpoint
            at = checkpoint.get("pos") if isinstance(checkpoint, dict) else None
            if isinstance(at, int) and at > pos:
                return None
            self.pending_checkpoint = next(self.checkpoints, None)
            self.report.checkpoints += 1
            if at != pos:
                self.problem(where, f"checkpoint {at} is malformed, out of order or outside the chain")
                continue
            try:
                self.signed(where, checkpoint, head)
            except (KeyError, TypeError, ValueError):
                self.problem(where, "not a checkpoint")
            return pos
        return None

    def signed(self, where: str, checkpoint: dict[str, Any], head: bytes) -> None:
        pos, kid, stated = int(checkpoint["pos"]), checkpoint["kid"], bytes.fromhex(checkpoint["hash"])
        key = self.keys.get(kid)
        message = checkpoint_message(pos, stated, int(checkpoint["ts"]))
        if key is None:
            self.problem(where, f"checkpoint {pos} is signed by key {kid!r}, which is not in the JWKS")
        else:
            try:
                key.verify(_unb64(checkpoint["sig"]), message)
            except InvalidSignature:
                self.problem(where, f"checkpoint {pos}: signature does not verify")
        if stated != head:
            self.problem(where, f"checkpoint {pos} does not match the chain recomputed from the export")

    def finish(self, chain: dict[str, Any] | None, last: int, last_checked: int | None) -> None:
        if chain is not None and (last != chain["last"] or last_checked != last):
            self.problem("chain.jsonl", f"the chain does not end at a signed checkpoint (position {chain['last']})")
        extra = sum(1 for _ in self.events) if self.in_step else 0
        if extra:
            self.problem(self.events_name, f"{extra} event(s) are not in the chain (inserted)")
        if self.pending_checkpoint is not None:
            self.problem("checkpoints.jsonl", "checkpoints past the end of the chain")
        counts = self.manifest["counts"]
        mine = {"links": self.report.links, "checkpoints": self.report.checkpoints}
        if self.in_step:
            mine["events"] = self.report.events
        if any(counts.get(k) != v for k, v in mine.items()):
            self.problem("manifest.json", f"counts {mine} differ from the manifest's")
        self.report.pending = int(counts.get("pending", 0))


@dataclass(frozen=True, slots=True)
class _Invalid:
    reason: str


def _read_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, parsed value or None) per line; split on LF only (U+2028 may sit inside a string)."""
    try:
        handle = path.open("rb")
    except OSError:
        return
    with handle:
        for number, line in enumerate(handle, 1):
            try:
                yield f"{path.name} line {number}", parse_json(line.removesuffix(b"\n"))
            except InvalidJSON as err:
                yield f"{path.name} line {number}", _Invalid(str(err))


def _read_events(path: Path, fmt: str) -> Iterator[tuple[str, Any]]:
    if fmt == "jsonl":
        yield from _read_lines(path)
        return
    try:
        bundle = parse_json(path.read_bytes())
    except (OSError, InvalidJSON) as err:
        yield path.name, _Invalid(str(err))
        return
    entries = bundle.get("entry", []) if isinstance(bundle, dict) and bundle.get("type") == "collection" else None
    if not isinstance(entries, list):
        yield path.name, _Invalid("not a collection Bundle")
        return
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        yield f"{path.name} entry {index}", _Invalid("an entry without a resource") if resource is None else resource


# =============================================================================================
# Files


def _new_directory(out: Path) -> bool:
    """Make ``out`` (0700: the export holds ePHI); True when made here. An existing one must be empty."""
    try:
        out.mkdir(mode=0o700, parents=True)
        return True
    except FileExistsError:
        if not out.is_dir() or any(out.iterdir()):
            raise EhrError(Category.INVALID, f"{out} exists and is not an empty directory") from None
        return False


@contextmanager
def _create(path: Path) -> Iterator[IO[bytes]]:
    """A new file (0600, never over an existing one), on disk when the block ends."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def _write_new(path: Path, data: bytes) -> None:
    with _create(path) as handle:
        handle.write(data)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
