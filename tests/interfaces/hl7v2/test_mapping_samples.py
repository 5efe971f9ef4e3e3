"""Every conformance sample of a handled type maps to valid R4, with hand-checked values; the
others are refused (AR) with the right code; malformed twins map as their clean versions."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from interfaces.hl7v2.errors import Code, Rejected
from interfaces.hl7v2.mapping import to_transaction
from interfaces.hl7v2.message import Parsed, decode, header_of
from tests.interfaces.hl7v2.mapping_helpers import ZONE, assert_valid, entry_of, mapped, resources, sample, v2_dir

Bundle = dict[str, Any]
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _observation(bundle: Bundle, code: str) -> dict[str, Any]:
    return next(o for o in resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == code)


def _patient(bundle: Bundle) -> dict[str, Any]:
    return resources(bundle, "Patient")[0]


def _adt_a01_fc1(b: Bundle) -> None:
    patient, entry = _patient(b), entry_of(b, "Patient")
    assert entry["request"] == {"method": "PUT", "url": "Patient?identifier=urn:ehr:hl7v2:authority:test1|PATID1234"}
    assert patient["name"][0]["family"] == "EVERYMAN" and patient["birthDate"] == "1988-08-18"
    assert patient["deceasedDateTime"] == "2008-08-25T11:16:30+01:15" and patient["multipleBirthInteger"] == 2
    encounter = entry_of(b, "Encounter")
    assert encounter["request"]["url"] == "Encounter?identifier=urn:ehr:hl7v2:authority:AccMng|40007716"
    assert encounter["resource"]["class"]["code"] == "PRENC" and encounter["resource"]["status"] == "in-progress"
    assert encounter["resource"]["subject"]["reference"] == entry["fullUrl"]


def _adt_a01_fc3(b: Bundle) -> None:
    patient = _patient(b)
    assert patient["identifier"][0] == {"system": "urn:ehr:hl7v2:authority:1", "value": "10006579", "type": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
    assert patient["address"][0]["city"] == "FOWL" and patient["gender"] == "male"
    assert resources(b, "Encounter")[0]["period"] == {"start": "2005-01-10T04:55:02+07:00"}


def _adt_a01_fc4(b: Bundle) -> None:
    assert [i["value"] for i in _patient(b)["identifier"]] == ["PATID1234", "123456789"]
    assert resources(b, "Encounter")[0]["class"]["code"] == "IMP"
    assert entry_of(b, "Encounter")["request"] == {"method": "POST", "url": "Encounter"}  # no PV1-19


def _adt_a01_hapi(b: Bundle) -> None:
    assert _patient(b)["name"][0] == {"family": "Duck", "given": ["Donald"], "prefix": ["MR."], "suffix": ["MR."]}
    assert resources(b, "Encounter")[0]["class"]["code"] == "UNK"  # PV1-2 empty


def _adt_a01_mirth(b: Bundle) -> None:
    telecom = _patient(b)["telecom"]
    assert {"system": "email", "value": "theMainMouse@disney.com", "use": "home"} in telecom
    url = entry_of(b, "Patient")["request"]["url"]
    assert url == "Patient?identifier=urn:ehr:hl7v2:facility:SENDING_FACILITY|135769"


def _adt_a01_python(b: Bundle) -> None:
    assert [n["family"] for n in _patient(b)["name"]] == ["RUFUSS"] and _patient(b)["gender"] == "female"
    assert resources(b, "Encounter")[0]["period"] == {"start": "2014-02-10T22:53:00-05:00"}  # PV1-45 is ""


def _adt_a04_fc2(b: Bundle) -> None:
    encounter = resources(b, "Encounter")[0]
    assert encounter["status"] == "planned" and encounter["class"]["code"] == "AMB"
    assert encounter["identifier"][0]["value"] == "0123456789"


def _adt_a04_fc1(b: Bundle) -> None:
    encounter = resources(b, "Encounter")[0]
    assert encounter["status"] == "planned"
    assert encounter["period"] == {"start": "2015-02-08T11:34:19+01:10"}


def _adt_a04_fc3(b: Bundle) -> None:
    assert _patient(b)["name"] == [{"family": "Doe", "given": ["Jane"]}]
    assert entry_of(b, "Encounter")["request"] == {"method": "POST", "url": "Encounter"}
    assert resources(b, "Encounter")[0]["class"]["code"] == "EMER"


def _adt_a04_fc4(b: Bundle) -> None:
    assert _patient(b)["name"][0]["family"] == "Bixby"
    assert [i["system"] for i in _patient(b)["identifier"]][:2] == [
        "urn:ehr:hl7v2:authority:MR", "urn:ehr:hl7v2:authority:EHRID"]


def _patient_only(family: str) -> Callable[[Bundle], None]:
    def check(b: Bundle) -> None:
        assert [e["resource"]["resourceType"] for e in b["entry"]] == ["Patient"]
        assert _patient(b)["name"][0]["family"] == family
    return check


def _oru_fc1(b: Bundle) -> None:
    assert entry_of(b, "Patient")["request"] == {
        "method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:2.16.840.1.114222.4.3.3.5.1.2|14"}
    culture = _observation(b, "625-4")
    assert culture["valueCodeableConcept"]["coding"][0] == {
        "system": "http://snomed.info/sct", "code": "27268008", "display": "Salmonella"}
    assert culture["interpretation"] == [{"coding": [{"system": INTERPRETATION, "code": "A"}]}]
    notes = [n["text"] for n in culture["note"]]
    assert notes[0].endswith("E.coli O157:H7 & other STECs, and Aeromonas")  # \T\ unescaped, from the OBR's NTE
    assert notes[-2:] == ["Submission of serum", "No Antibodies Detected"]
    assert [c["valueQuantity"]["value"] for c in _observation(b, "8867-4")["component"]] == [Decimal(27), Decimal(25)]
    report = entry_of(b, "DiagnosticReport")
    assert report["request"]["url"] == "DiagnosticReport?identifier=urn:oid:2.16.840.1.114222.4.3.3.5.1.2|986"
    assert resources(b, "Specimen")[0]["collection"]["collectedPeriod"]["end"] == "2011-11-03T14:34:28-08:00"


def _oru_fc2(b: Bundle) -> None:
    assert len(resources(b, "Specimen")) == 1  # the same SPM under both OBRs is one entry
    assert _observation(b, "11273-0")["valueQuantity"] == {"value": Decimal("4.06"), "unit": "tera.l-1"}
    assert "valueQuantity" not in _observation(b, "11156-7")  # OBX-5 empty, result pending
    assert [r["status"] for r in resources(b, "DiagnosticReport")] == ["final", "unknown"]


def _oru_fc3(b: Bundle) -> None:
    hgb = _observation(b, "20509-6")
    assert hgb["valueQuantity"]["value"] == Decimal("13.4") and hgb["status"] == "final"
    assert entry_of(b, "Observation")["request"]["url"] == (
        "Observation?identifier=urn:ehr:hl7v2:application:SomeSystem|890775544-30180-4-1")


def _oru_fc4(b: Bundle) -> None:
    glucose = _observation(b, "1554-5")
    assert glucose["valueQuantity"] == {"value": Decimal(182), "unit": "mg/dl"}
    assert glucose["referenceRange"] == [{"text": "70_105"}]
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"


def _oru_fc5(b: Bundle) -> None:
    hgb = _observation(b, "718-7")
    assert hgb["valueQuantity"] == {"value": Decimal("12.5"), "unit": "grams per milliliter", "system": UCUM,
                                    "code": "g/mL"}
    low, high = hgb["referenceRange"][0]["low"], hgb["referenceRange"][0]["high"]
    assert (low["value"], high["value"], low["code"]) == (Decimal(13), Decimal(18), "g/mL")
    assert hgb["interpretation"][0]["coding"][0]["code"] == "L"
    assert _observation(b, "6742-1")["valueString"] == "Many spherocytes present."
    report = resources(b, "DiagnosticReport")[0]
    assert report["issued"] == "2011-01-04T17:00:28-08:00" and len(report["result"]) == 28


def _oru_mirth1(b: Bundle) -> None:
    assert "birthDate" not in _patient(b)  # "Aug 15, 1942" is not a DTM: left out, marked absent
    sodium = _observation(b, "84295")
    assert sodium["effectiveDateTime"] == "2006-09-22T15:23:00-05:00"  # no offset sent: the sender's zone
    assert entry_of(b, "DiagnosticReport")["request"] == {"method": "POST", "url": "DiagnosticReport"}


def _oru_python(b: Bundle) -> None:
    assert _observation(b, "1553-5")["valueString"] == "182"  # FN (a name type) kept as text
    assert resources(b, "Specimen")[0]["collection"] == {"collectedDateTime": "2002-02-15T07:30:00-05:00"}


EXPECTATIONS: dict[str, Callable[[Bundle], None]] = {
    "ADT_A01_fhirconverter_1.hl7": _adt_a01_fc1, "ADT_A01_fhirconverter_2.hl7": _adt_a01_fc1,
    "ADT_A01_fhirconverter_3.hl7": _adt_a01_fc3, "ADT_A01_fhirconverter_4.hl7": _adt_a01_fc4,
    "ADT_A01_hapi_1.hl7": _adt_a01_hapi, "ADT_A01_mirth_1.hl7": _adt_a01_mirth,
    "ADT_A01_python-hl7_1.hl7": _adt_a01_python,
    "ADT_A04_fhirconverter_1.hl7": _adt_a04_fc1,
    "ADT_A04_fhirconverter_2.hl7": _adt_a04_fc2, "ADT_A04_fhirconverter_3.hl7": _adt_a04_fc3,
    "ADT_A04_fhirconverter_4.hl7": _adt_a04_fc4, "ADT_A04_mirth_1.hl7": _adt_a01_mirth,
    "ADT_A08_fhirconverter_1.hl7": _patient_only("EVERYMAN"), "ADT_A08_fhirconverter_2.hl7": _patient_only("EVERYMAN"),
    "ADT_A28_fhirconverter_1.hl7": _patient_only("EVERYMAN"), "ADT_A28_fhirconverter_2.hl7": _patient_only("EVERYMAN"),
    "ADT_A31_fhirconverter_1.hl7": _patient_only("EVERYMAN"), "ADT_A31_fhirconverter_2.hl7": _patient_only("EVERYMAN"),
    "ORU_R01_fhirconverter_1.hl7": _oru_fc1, "ORU_R01_fhirconverter_2.hl7": _oru_fc2,
    "ORU_R01_fhirconverter_3.hl7": _oru_fc3, "ORU_R01_fhirconverter_4.hl7": _oru_fc4,
    "ORU_R01_fhirconverter_5.hl7": _oru_fc5, "ORU_R01_mirth_1.hl7": _oru_mirth1,
    "ORU_R01_python-hl7_1.hl7": _oru_python,
}


@pytest.mark.parametrize("name", sorted(EXPECTATIONS))
def test_sample_maps_to_valid_r4(name: str) -> None:
    bundle = sample(name)
    assert bundle["type"] == "transaction"
    assert_valid(bundle)
    EXPECTATIONS[name](bundle)


def test_every_handled_sample_has_an_expectation() -> None:
    handled = {p.name for p in v2_dir().glob("*.hl7") if p.name.startswith(("ADT_A0", "ADT_A28", "ADT_A31", "ORU"))}
    assert handled - {"ADT_A03_hapi_1.hl7", "ORU_R01_mirth_2.hl7"} == set(EXPECTATIONS)


@pytest.mark.parametrize(("name", "code"), [
    ("ADT_A03_hapi_1.hl7", Code.UNSUPPORTED_EVENT),
    ("SIU_S12_mirth_1.hl7", Code.UNSUPPORTED_MESSAGE_TYPE),
    ("VXU_V04_fhirconverter_1.hl7", Code.UNSUPPORTED_MESSAGE_TYPE),
    ("OML_O33_hl7apy_1.hl7", Code.UNSUPPORTED_MESSAGE_TYPE),
    ("RSP_K22_hl7apy_1.hl7", Code.UNSUPPORTED_MESSAGE_TYPE),
    ("RSP_K22_hl7apy_2.hl7", Code.UNSUPPORTED_MESSAGE_TYPE),
    ("ERP_Z99_hapi_1.hl7", Code.UNSUPPORTED_MESSAGE_TYPE),
    ("malformed/ORM_O01_mirth_crlf.hl7", Code.UNSUPPORTED_MESSAGE_TYPE),
    ("malformed/ORM_O01_mirth_whitespace.hl7", Code.UNSUPPORTED_MESSAGE_TYPE),
    ("malformed/RSP_K22_hl7apy_incomplete-pid3.hl7", Code.UNSUPPORTED_MESSAGE_TYPE),
])
def test_unsupported_types_are_rejected(name: str, code: Code) -> None:
    with pytest.raises(Rejected) as caught:
        sample(name)
    assert caught.value.reject and caught.value.code is code
    assert caught.value.location is not None and caught.value.location[:3] == ("MSH", 1, 9)


@pytest.mark.parametrize(("malformed", "clean"), [
    ("ADT_A01_fhirconverter_bom-lf.hl7", "ADT_A01_fhirconverter_3.hl7"),
    ("ORU_R01_fhirconverter_lf.hl7", "ORU_R01_fhirconverter_1.hl7"),
])
def test_malformed_twin_maps_like_the_clean_one(malformed: str, clean: str) -> None:
    assert sample(f"malformed/{malformed}") == sample(clean)


def test_repetitions_and_subcomponents_in_pid() -> None:
    raw = (v2_dir() / "malformed/ORU_R01_python-hl7_repetition-subcomponent.hl7").read_bytes()
    with pytest.raises(Rejected) as caught:  # as published it has no OBR: a result message without results
        mapped(raw)
    assert caught.value.code is Code.SEGMENT_SEQUENCE and not caught.value.reject
    bundle = mapped(raw + b"OBR|1||F1|718-7^Hemoglobin^LN\r")
    assert_valid(bundle)
    facility = "urn:ehr:hl7v2:facility:ELAB-3"
    assert [(i["system"], i["value"]) for i in _patient(bundle)["identifier"]] == [
        (facility, "Component1"), (facility, "Repeat1"), (facility, "Repeat2")]


def _unversioned(name: str) -> Parsed:
    """A v2.2 sample, which parse() refuses (AR), read past the version check to test the mapping."""
    text = decode((v2_dir() / name).read_bytes())
    return Parsed(header_of(text), text)


def test_one_filler_order_number_twice_with_different_content_is_an_error() -> None:
    with pytest.raises(Rejected) as caught:
        to_transaction(_unversioned("ORU_R01_mirth_2.hl7"), zone=ZONE)
    assert (caught.value.code, caught.value.location, caught.value.reject) == (Code.DUPLICATE_KEY, ("OBR", 3, 3), False)
    assert [m.location for m in caught.value.more] == [("OBR", 4, 3), ("OBR", 7, 3)]


def test_obr_and_obx_notes_of_a_large_oru() -> None:
    parsed = _unversioned("ORU_R01_mirth_2.hl7")
    text = parsed.text.split("\rOBR|||1^LAB")[0]  # the first order only: CBC, 17 OBX, 3 NTE after the OBR
    bundle = to_transaction(Parsed(parsed.header, text), zone=ZONE)
    assert_valid(bundle)
    wbc = _observation(bundle, "WBC")
    assert wbc["note"] == [{"text": "Patient Fasting"}] and wbc["valueString"] == "5.8"
    assert wbc["referenceRange"][0]["low"] == {"value": Decimal("4.0"), "unit": "THOU/uL"}
