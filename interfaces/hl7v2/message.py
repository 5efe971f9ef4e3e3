"""An HL7 v2 message off the wire: decoded, its header read and checked, its segments found.

Real feeds are sloppy, so decoding is tolerant: a UTF-8 byte-order mark is dropped, segments may end
in CR, LF or CRLF (HL7 v2 2.5 section 2.5.3 says CR; senders differ), bytes that are not UTF-8 are
read as Windows-1252 (the usual culprit), blank lines are skipped. The header is read by splitting
MSH on its own separators, so that any message with an MSH can be acknowledged with its control id.

Fields are read by mapping/segments.py with the sender's delimiters, not by hl7apy: hl7apy's parser
took 33 ms for an eight-segment ORU^R01 on the benchmark machine (its element tree is built and
checked field by field), which alone would cap the listener near 30 messages/s per core
(docs/adr/0010-hl7v2-mllp.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interfaces.hl7v2.errors import Code, Rejected

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


@dataclass(frozen=True, slots=True)
class Header:
    """MSH, as far as it could be read (empty strings where a field is absent)."""

    field_sep: str            # MSH-1
    encoding: str             # MSH-2: component, repetition, escape, subcomponent (and truncation, 2.7+)
    sending_application: str  # MSH-3.1
    sending_facility: str     # MSH-4.1
    receiving_application: str  # MSH-5.1
    receiving_facility: str   # MSH-6.1
    message_type: str         # MSH-9.1^MSH-9.2, e.g. "ORU^R01"
    control_id: str           # MSH-10
    processing_id: str        # MSH-11.1: P production, T training, D debugging
    version: str              # MSH-12.1
    accept_ack: str           # MSH-15: AL, NE, ER, SU; empty in original mode
    application_ack: str      # MSH-16

    @property
    def trigger(self) -> str:
        return self.message_type.partition("^")[2]

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgment mode (v2 section 2.9.3) when MSH-15 or MSH-16 is valued."""
        return bool(self.accept_ack or self.application_ack)


@dataclass(frozen=True, slots=True)
class Parsed:
    header: Header
    text: str          # the decoded message, segments separated by CR


def decode(raw: bytes) -> str:
    """Bytes as text with CR between segments and no blank segments."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return "\r".join(line for line in lines if line.strip())


def header_of(text: str) -> Header:
    """MSH read by hand; raises Rejected (AR) when there is no usable MSH at all."""
    if not text.startswith("MSH") or len(text) < 8:
        raise Rejected(Code.SEGMENT_SEQUENCE, "the message does not start with an MSH segment", reject=True)
    sep = text[3]
    msh = text.split("\r", 1)[0]
    fields = msh.split(sep)  # fields[1] is MSH-2, fields[n] is MSH-(n+1)
    encoding = fields[1] if len(fields) > 1 else ""
    component = encoding[:1] or "^"

    def field(number: int, components: int = 1) -> str:
        value = fields[number - 1] if number - 1 < len(fields) else ""
        return "^".join(value.split(component)[:components])

    return Header(
        field_sep=sep, encoding=encoding,
        sending_application=field(3), sending_facility=field(4),
        receiving_application=field(5), receiving_facility=field(6),
        message_type=field(9, 2), control_id=field(10), processing_id=field(11),
        version=field(12), accept_ack=field(15), application_ack=field(16),
    )


def parse(raw: bytes) -> Parsed:
    return read(decode(raw))


def read(text: str) -> Parsed:
    """Decoded text: read the header, check it and the segment ids: one MSH, then three-character ids."""
    header = header_of(text)
    check_header(header)
    ids = [segment.split(header.field_sep, 1)[0] for segment in text.split("\r")]
    if ids.count("MSH") > 1:
        raise Rejected(Code.SEGMENT_SEQUENCE, "more than one MSH in one frame (batches are not accepted)", reject=True)
    for number, segment_id in enumerate(ids, start=1):
        if not _SEGMENT_ID.match(segment_id):
            raise Rejected(Code.SEGMENT_SEQUENCE, f"segment {number} has no valid segment id", reject=True)
    return Parsed(header, text)


def check_header(header: Header) -> None:
    """AR unless MSH-2, MSH-9, MSH-10, MSH-11 and MSH-12 are usable."""
    if len(header.encoding) not in (4, 5) or len(set(header.encoding + header.field_sep)) != len(header.encoding) + 1:
        raise Rejected(Code.DATA_TYPE, "MSH-2 must hold four or five distinct encoding characters", reject=True,
                       location=("MSH", 1, 2))
    if not header.control_id:
        raise Rejected(Code.REQUIRED_FIELD, "MSH-10 (message control id) is empty", reject=True,
                       location=("MSH", 1, 10))
    if header.message_type.count("^") != 1 or not all(header.message_type.split("^")):
        raise Rejected(Code.REQUIRED_FIELD, "MSH-9 must name a message type and trigger event", reject=True,
                       location=("MSH", 1, 9))
    if header.version not in SUPPORTED_VERSIONS:
        raise Rejected(Code.UNSUPPORTED_VERSION, f"version {header.version or '(empty)'} is not supported "
                       f"({SUPPORTED_VERSIONS[0]} to {SUPPORTED_VERSIONS[-1]})", reject=True, location=("MSH", 1, 12))
    if header.processing_id not in ("P", "T", "D", ""):
        raise Rejected(Code.UNSUPPORTED_PROCESSING_ID, "MSH-11 must be P, T or D", reject=True, location=("MSH", 1, 11))
