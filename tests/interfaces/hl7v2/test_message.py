"""Decoding and the header: tolerant of real-world quirks, strict about what an ACK needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interfaces.hl7v2.errors import Code, Rejected
from interfaces.hl7v2.message import decode, header_of, parse
from tests.fhir.shared import CONFORMANCE, require

ORU = (
    "MSH|^~\\&|LAB|ACME|EHR|HOSP|20260101120000||ORU^R01|C1|P|2.5.1\r"
    "PID|1||123^^^ACME^MR||DOE^JANE\r"
    "OBR|1||F1|718-7^Hemoglobin^LN\r"
    "OBX|1|NM|718-7^Hemoglobin^LN||13.2|g/dL|12-16|N|||F\r"
)


def _v2() -> Path:
    return require(CONFORMANCE / "hl7v2")


def test_header_fields() -> None:
    header = header_of(ORU)
    assert (header.sending_application, header.sending_facility) == ("LAB", "ACME")
    assert (header.message_type, header.trigger, header.control_id, header.version) == ("ORU^R01", "R01", "C1", "2.5.1")
    assert not header.enhanced


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
def test_any_segment_terminator_and_a_bom(ending: str) -> None:
    raw = b"\xef\xbb\xbf" + ORU.replace("\r", ending).encode()
    assert decode(raw) == ORU.rstrip("\r")


def test_cp1252_bytes_are_read() -> None:
    raw = ORU.replace("DOE", "D\u00d6E").encode("cp1252")
    assert "D\u00d6E" in decode(raw)


def test_other_separators() -> None:
    text = ORU.replace("|", "#")
    header = header_of(text)
    assert (header.field_sep, header.message_type, header.control_id) == ("#", "ORU^R01", "C1")


@pytest.mark.parametrize(
    ("text", "code", "field"),
    [
        ("PID|1||123\r", Code.SEGMENT_SEQUENCE, None),
        (ORU.replace("^~\\&", "^~\\", 1), Code.DATA_TYPE, 2),
        (ORU.replace("|C1|", "||", 1), Code.REQUIRED_FIELD, 10),
        (ORU.replace("ORU^R01", "ORU", 1), Code.REQUIRED_FIELD, 9),
        (ORU.replace("2.5.1", "2.2", 1), Code.UNSUPPORTED_VERSION, 12),
        (ORU.replace("|P|", "|X|", 1), Code.UNSUPPORTED_PROCESSING_ID, 11),
        (ORU + ORU, Code.SEGMENT_SEQUENCE, None),
    ],
)
def test_refused_headers(text: str, code: Code, field: int | None) -> None:
    with pytest.raises(Rejected) as caught:
        parse(text.encode())
    assert caught.value.code is code and caught.value.reject
    assert (caught.value.location[2] if caught.value.location else None) == field


def test_every_sample_reads_or_is_refused_with_a_reason() -> None:
    files = sorted(_v2().rglob("*.hl7"))
    assert len(files) >= 60
    for path in files:
        try:
            parsed = parse(path.read_bytes())
        except Rejected as err:
            assert err.reject and err.text, path.name
        else:
            assert parsed.text.startswith("MSH"), path.name


@given(st.binary(max_size=400))
def test_garbage_is_refused_never_raised(raw: bytes) -> None:
    try:
        parse(raw)
    except Rejected:
        pass


@given(st.text(max_size=300))
def test_garbage_after_an_msh_is_refused_never_raised(tail: str) -> None:
    try:
        parse((ORU + tail).encode())
    except Rejected:
        pass
