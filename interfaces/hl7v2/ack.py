"""Acknowledgments (HL7 v2 section 2.9): MSA with AA, AE or AR, and ERR segments saying why.

Original mode (MSH-15 and MSH-16 empty): one application ACK. Enhanced mode (section 2.9.3): an
accept ACK (CA, CE, CR) when MSH-15 asks for one, then the application ACK (AA, AE, AR) when MSH-16
asks for one, both on the same connection (this listener has no way back to the sender but its
connection; docs/adr/0010-hl7v2-mllp.md). Each condition is AL (always), NE (never), ER (only on
an error) or SU (only on success); an empty one in enhanced mode counts as AL.

ERR: from 2.5, ERR-2 (location, ERL), ERR-3 (HL7 error code, table 0357) and ERR-4 (severity); before
2.5, ERR-1 (ELD: segment^sequence^field^code&text&HL70357). Texts name fields, never their values.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from interfaces.hl7v2.errors import Code, Rejected
from interfaces.hl7v2.message import Header

_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))
_CONDITIONS = {"AL": (True, True), "NE": (False, False), "ER": (False, True), "SU": (True, False)}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message: AA, AE (content error, nothing stored) or AR (refused)."""

    code: str
    errors: tuple[Rejected, ...] = field(default_factory=tuple)
    internal: bool = False   # could not be committed (the store failed): AR, or CE in enhanced mode

    @classmethod
    def of(cls, error: Rejected) -> Outcome:
        return cls("AR" if error.reject else "AE", (error, *error.more))

    @property
    def accepted(self) -> bool:
        return self.code == "AA"


ACCEPTED = Outcome("AA")


def acknowledgments(header: Header, outcome: Outcome) -> list[str]:
    """The replies to send for ``header``'s message, in order (none, one or two)."""
    if not header.enhanced:
        return [application_ack(header, outcome)]
    replies = []
    accept = "CE" if outcome.internal else "CR" if outcome.code == "AR" else "CA"
    if _wanted(header.accept_ack, accept == "CA"):
        replies.append(_ack(header, accept, outcome.errors if accept != "CA" else ()))
    if accept == "CA" and _wanted(header.application_ack, outcome.accepted):
        replies.append(application_ack(header, outcome))
    return replies


def application_ack(header: Header, outcome: Outcome) -> str:
    return _ack(header, outcome.code, outcome.errors)


def _wanted(condition: str, success: bool) -> bool:
    on_success, on_error = _CONDITIONS.get(condition or "AL", (True, True))
    return on_success if success else on_error


def _ack(header: Header, code: str, errors: tuple[Rejected, ...]) -> str:
    version = header.version if header.version else "2.5"
    trigger = header.trigger
    kind = f"ACK^{trigger}^ACK" if trigger and _at_least(version, "2.4") else f"ACK^{trigger}" if trigger else "ACK"
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    msh = [
        "MSH", "^~\\&", _escape(header.receiving_application), _escape(header.receiving_facility),
        _escape(header.sending_application), _escape(header.sending_facility), stamp, "", kind,
        secrets.token_hex(10), header.processing_id or "P", version,
    ]
    segments = ["|".join(msh), "|".join(["MSA", code, _escape(header.control_id)])]
    segments += [_err(error, version) for error in errors]
    return "\r".join(segments) + "\r"


def _err(error: Rejected, version: str) -> str:
    code = f"{error.code.number}^{error.code.text}^HL70357"
    segment, sequence, number, *rest = error.location or ("", "", "")
    if _at_least(version, "2.5"):
        location = "^".join(str(part) for part in (segment, sequence, number, *rest))
        where = location if error.location else ""
        return "|".join(["ERR", "", where, code, "E", "", "", "", _escape(error.text)])  # ERR-4 severity: error
    subcodes = f"{error.code.number}&{_escape(error.text)}&HL70357"
    return "|".join(["ERR", f"{segment}^{sequence}^{number}^{subcodes}"])


def _escape(value: str) -> str:
    for char, sequence in _ESCAPES:
        value = value.replace(char, sequence)
    return value.replace("\r", " ").replace("\n", " ")


def _at_least(version: str, floor: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(part) for part in v.split(".") if part.isdigit())

    return key(version) >= key(floor)


__all__ = ["ACCEPTED", "Code", "Outcome", "acknowledgments", "application_ack"]
