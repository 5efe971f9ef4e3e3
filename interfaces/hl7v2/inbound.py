"""One HL7 v2 message in, its acknowledgments out: the one call the MLLP handler makes.

who sent it (the certificate's registered sender; MSH-3, MSH-4 and MSH-9 checked: AR) -> seen before
(the first ACK again, nothing written) -> parse and map to a FHIR transaction (AE or AR) -> the raw
message as a Binary and a Provenance naming every entry -> one store transaction, the ACK kept as
its receipt -> the ACK. Every message leaves one ``hl7v2-message`` AuditEvent naming its type,
control id and ACK code (plus the store's own event per resource written).
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.context import AccessContext
from ehr.errors import Category, EhrError
from ehr.store.bundle import Request
from ehr.store.bundle_entries import parse_entry
from ehr.store.senders import Sender, SenderRegistry
from ehr.store.service import Receipt, Store
from interfaces.hl7v2 import mapping, moves
from interfaces.hl7v2.ack import ACCEPTED, Outcome, acknowledgments
from interfaces.hl7v2.errors import Code, Rejected
from interfaces.hl7v2.message import Header, Parsed, check_header, decode, header_of, read
from interfaces.hl7v2.scopes import permissions_for
from smart_auth.scopes import Permissions

log = logging.getLogger("ehr.hl7v2")
ER7 = "x-application/hl7-v2+er7"
_BLANK = Header("|", "^~\\&", "", "", "", "", "", "", "P", "", "", "")
# A store error as an HL7 error: (code, reject). Internal failures are AR: the sender may send again.
_STORE_ERRORS = {
    Category.NOT_FOUND: Code.UNKNOWN_KEY, Category.PRECONDITION_FAILED: Code.DUPLICATE_KEY,
    Category.CONFLICT: Code.RECORD_LOCKED, Category.FORBIDDEN: Code.UNSUPPORTED_MESSAGE_TYPE,
}


@dataclass(frozen=True, slots=True)
class Arrival:
    raw: bytes
    thumbprint: str   # x5t#S256 of the verified client certificate
    address: str      # host:port of the peer


class Inbound:
    def __init__(self, store: Store, audit: AuditLog, senders: SenderRegistry, zone: tzinfo) -> None:
        self._store = store
        self._audit = audit
        self._senders = senders
        self._zone = zone

    async def handle(self, arrival: Arrival) -> list[bytes]:
        text = decode(arrival.raw)
        sender = await self._senders.by_thumbprint(arrival.thumbprint)
        ctx = _context(sender, arrival)
        try:
            header = header_of(text)
        except Rejected as err:
            return await self._refused(ctx, _BLANK, Outcome.of(err))
        try:
            check_header(header)
            _admit(sender, header)
            return await self._accept(ctx, header, text)
        except Rejected as err:
            return await self._refused(ctx, header, Outcome.of(err))

    async def _accept(self, ctx: AccessContext, header: Header, text: str) -> list[bytes]:
        kept = await self._store.receipt(ctx, header.control_id)
        if kept is not None:
            await self._audit.record(ctx, _event(header, "AA", duplicate=True))
            return _split(kept)
        parsed = read(text)  # decoded once, in handle()
        bundle = _mapped(parsed, self._zone)
        replies = [reply.encode() for reply in acknowledgments(header, ACCEPTED)]
        try:
            if header.message_type == "ADT^A40":
                bundle["entry"] += await self._moves(ctx, parsed, bundle)
            requests = _requests(self._store.indexer.base, bundle, parsed, ctx)
        except EhrError as err:
            return await self._refused(ctx, header, _outcome_of(err))
        what = _event(header, "AA")
        what.on_failure = _failed_ack
        try:
            await self._store.transaction(
                ctx, requests, what=what, receipt=Receipt(header.control_id, _APART.join(replies))
            )
        except EhrError as err:  # the store's AuditEvent for this message says so (with _failed_ack)
            return await self._store_failed(ctx, header, err)
        return replies

    async def _moves(self, ctx: AccessContext, parsed: Parsed, bundle: dict[str, Any]) -> list[dict[str, Any]]:
        _, retired_key = mapping.merge_keys(parsed)
        retired = await moves.retired_patient(self._store, ctx, retired_key)
        surviving = next(e["fullUrl"] for e in bundle["entry"] if e["request"]["method"] == "PUT")
        return await moves.moved(self._store, ctx, retired, surviving)

    async def _store_failed(self, ctx: AccessContext, header: Header, err: EhrError) -> list[bytes]:
        """The store refused or failed: its own AuditEvent says so; the sender gets AE or AR."""
        if err.category is Category.CONFLICT:
            kept = await self._store.receipt(ctx, header.control_id)
            if kept is not None:  # a copy of this message raced this one and won
                return _split(kept)
        outcome = _outcome_of(err)
        return [reply.encode() for reply in acknowledgments(header, outcome)]

    async def _refused(self, ctx: AccessContext, header: Header, outcome: Outcome) -> list[bytes]:
        what = _event(header, outcome.code)
        first = outcome.errors[0]
        category = Category.INTERNAL if outcome.internal else Category.FORBIDDEN if first.reject else Category.INVALID
        what.failed(category, f"{first.code.number} {first.text}")
        await self._audit.record(ctx, what)
        return [reply.encode() for reply in acknowledgments(header, outcome)]


def _admit(sender: Sender | None, header: Header) -> None:
    """AR unless a registered, enabled sender sends a type it may, naming itself in MSH-3/MSH-4."""
    if sender is None or sender.disabled:
        raise Rejected(Code.UNKNOWN_KEY, "this certificate is not a registered, enabled sender", reject=True)
    if header.sending_facility != sender.facility:
        raise Rejected(Code.TABLE_VALUE, "MSH-4 is not the facility registered for this sender", reject=True,
                       location=("MSH", 1, 4))
    if sender.application and header.sending_application != sender.application:
        raise Rejected(Code.TABLE_VALUE, "MSH-3 is not the application registered for this sender", reject=True,
                       location=("MSH", 1, 3))
    if header.message_type not in sender.types:
        raise Rejected(Code.UNSUPPORTED_MESSAGE_TYPE, "this sender is not registered for this message type",
                       reject=True, location=("MSH", 1, 9))
    if len(header.control_id) > 199:
        raise Rejected(Code.DATA_TYPE, "MSH-10 is longer than 199 characters", reject=True, location=("MSH", 1, 10))


def _mapped(parsed: Parsed, zone: tzinfo) -> dict[str, Any]:
    try:
        return mapping.to_transaction(parsed, zone=zone)
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - a message the mapping did not foresee: refuse it, stay up
        log.warning("hl7v2 mapping failed: %s", type(exc).__name__)
        raise Rejected(Code.INTERNAL, "the message could not be mapped to FHIR") from None


def _requests(base: str, bundle: dict[str, Any], parsed: Parsed, ctx: AccessContext) -> list[Request]:
    """The mapped entries, then the raw message (Binary) and a Provenance over all of them."""
    entries = list(bundle.get("entry") or [])
    binary_url = f"urn:uuid:{uuid.uuid4()}"
    entries.append(_binary(binary_url, parsed.text, entries))
    entries.append(_provenance(parsed.header, ctx, binary_url, entries))
    try:
        return [_request(base, n, entry) for n, entry in enumerate(entries)]
    except EhrError as err:
        raise Rejected(Code.INTERNAL, f"the mapped transaction is invalid ({err.message})") from None


def _request(base: str, index: int, entry: dict[str, Any]) -> Request:
    parsed = parse_entry(base, index, entry)
    if not isinstance(parsed, Request):
        raise EhrError(Category.INVALID, "a mapped entry reads instead of writing")
    return parsed


def _binary(full_url: str, text: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Binary", "contentType": ER7, "data": base64.b64encode(text.encode()).decode(),
    }
    patient = next((e["fullUrl"] for e in entries if e["resource"].get("resourceType") == "Patient"), None)
    if patient:
        resource["securityContext"] = {"reference": patient}
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": "Binary"}}


def _provenance(header: Header, ctx: AccessContext, binary_url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """R4 Provenance: what the message created or changed (targets), from which message (entity)."""
    targets = [{"reference": e["fullUrl"]} for e in entries if e.get("fullUrl") and e["fullUrl"] != binary_url]
    resource = {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": header.trigger}]},
        "agent": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                 "code": "author"}]},
            "who": {"identifier": {"system": "urn:ehr:hl7v2:sender", "value": ctx.actor}, "display": ctx.actor_display},
        }],
        "entity": [{"role": "source", "what": {"reference": binary_url}}],
    }
    request = {"method": "POST", "url": "Provenance"}
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource, "request": request}


def _context(sender: Sender | None, arrival: Arrival) -> AccessContext:
    if sender is None or sender.disabled:
        return AccessContext(
            actor="hl7:unknown", actor_display="unregistered HL7 v2 sender", permissions=Permissions(()),
            cert_thumbprint=arrival.thumbprint, address=arrival.address,
        )
    return AccessContext(
        actor=sender.actor, actor_display=sender.name, permissions=permissions_for(sender.types),
        cert_thumbprint=arrival.thumbprint, address=arrival.address,
    )


def _event(header: Header, ack: str, *, duplicate: bool = False) -> Interaction:
    detail = {"hl7v2-type": header.message_type, "hl7v2-control-id": header.control_id, "hl7v2-ack": ack}
    if duplicate:
        detail["hl7v2-duplicate"] = "the first ACK was sent again; nothing written"
    return Interaction("hl7v2-message", detail=detail)


def _failed_ack(what: Interaction, category: Category) -> None:
    what.detail["hl7v2-ack"] = _outcome_of(EhrError(category, "")).code


def _outcome_of(err: EhrError) -> Outcome:
    if err.category is Category.INTERNAL:
        again = Rejected(Code.INTERNAL, "the message could not be stored; send it again")
        return Outcome("AR", (again,), internal=True)
    code = _STORE_ERRORS.get(err.category, Code.DATA_TYPE)
    details = [Rejected(code, f"{err.message}: {d.diagnostics}" + (f" at {d.expression}" if d.expression else ""))
               for d in err.details[:10]]
    first = Rejected(code, err.message)
    return Outcome("AE", (first, *details))


_APART = b"\x1c"  # between the replies kept in one receipt (never inside one: it ends an MLLP frame)


def _split(kept: bytes) -> list[bytes]:
    return kept.split(_APART)
