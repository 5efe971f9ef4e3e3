"""Content errors give one AE (nothing mapped), located, with texts that never carry field values."""

from __future__ import annotations

import pytest

from interfaces.hl7v2.errors import Code, Rejected
from tests.interfaces.hl7v2.mapping_helpers import mapped, v2_dir


def _edited(name: str, old: str, new: str) -> bytes:
    raw = (v2_dir() / name).read_bytes()
    assert old.encode() in raw
    return raw.replace(old.encode(), new.encode(), 1)


def _rejected(raw: bytes) -> Rejected:
    with pytest.raises(Rejected) as caught:
        mapped(raw)
    assert not caught.value.reject  # AE: understood, not stored
    return caught.value


def test_empty_pid3_in_adt() -> None:
    error = _rejected(_edited("ADT_A01_mirth_1.hl7", "PID|1||135769|", "PID|1|||"))
    assert (error.code, error.location) == (Code.REQUIRED_FIELD, ("PID", 1, 3))
    assert "135769" not in error.text and "MOUSE" not in error.text


def test_empty_pid3_in_oru() -> None:
    error = _rejected(_edited("ORU_R01_fhirconverter_4.hl7", "PID|||555-44-4444|", "PID||||"))
    assert (error.code, error.location) == (Code.REQUIRED_FIELD, ("PID", 1, 3))


def test_nm_that_is_not_a_number() -> None:
    error = _rejected(_edited("ORU_R01_fhirconverter_5.hl7", "||41|%^percent^UCUM|", "||abc|%^percent^UCUM|"))
    assert (error.code, error.location) == (Code.DATA_TYPE, ("OBX", 3, 5))
    assert "abc" not in error.text and error.text == "OBX-5 of OBX 3 is not a valid NM value"


def test_unknown_value_type() -> None:
    error = _rejected(_edited("ORU_R01_fhirconverter_5.hl7", "OBX|26|TX|", "OBX|26|QQ|"))
    assert (error.code, error.location) == (Code.DATA_TYPE, ("OBX", 26, 2))
    assert "QQ" not in error.text and "spherocytes" not in error.text


def test_several_errors_are_reported_together() -> None:
    raw = _edited("ORU_R01_fhirconverter_5.hl7", "||4.41|", "||x4|")
    raw = raw.replace(b"||12.5|", b"||1,5|", 1)
    raw = raw.replace(b"|||N|||F|||", b"|||N||||||", 1)  # OBX 21 (the first with no reference range) loses OBX-11
    error = _rejected(raw)
    found = [(error.code, error.location)] + [(m.code, m.location) for m in error.more]
    assert (Code.DATA_TYPE, ("OBX", 1, 5)) in found and (Code.DATA_TYPE, ("OBX", 2, 5)) in found
    assert (Code.REQUIRED_FIELD, ("OBX", 21, 11)) in found


@pytest.mark.parametrize(("old", "new", "code", "location"), [
    ("|||F|||20110103143428-0800", "|||Q|||20110103143428-0800", Code.TABLE_VALUE, ("OBX", 1, 11)),
    ("|||20110104170028-0800|||F|", "|||20110104170028-0800|||Z|", Code.TABLE_VALUE, ("OBR", 1, 25)),
    ("|||20110103143428-0800|||||20110103163428", "|||2011-01-03|||||20110103163428", Code.DATA_TYPE, ("OBX", 1, 14)),
    ("|57021-8^CBC W Auto Differential panel in Blood^LN^4456544^CBC^99USI^^^CBC W Auto Differential panel in Blood|",
     "||", Code.REQUIRED_FIELD, ("OBR", 1, 4)),
])
def test_located_content_errors(old: str, new: str, code: Code, location: tuple[str, int, int]) -> None:
    error = _rejected(_edited("ORU_R01_fhirconverter_5.hl7", old, new))
    assert (error.code, error.location) == (code, location)


def test_no_sending_facility_and_no_authority() -> None:
    raw = _edited("ORU_R01_fhirconverter_2.hl7", "MSH|^~\\&|SomeSystem|", "MSH|^~\\&||")
    error = _rejected(raw)
    assert (error.code, error.location) == (Code.REQUIRED_FIELD, ("MSH", 1, 4))
