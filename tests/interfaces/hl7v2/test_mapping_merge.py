"""ADT^A40: the survivor as a conditional update linking the retired patient, the retired one patched."""

from __future__ import annotations

import pytest

from ehr.store.fhirpath_patch import apply, check_parameters
from interfaces.hl7v2.errors import Code, Rejected
from interfaces.hl7v2.mapping import merge_keys
from interfaces.hl7v2.message import parse
from tests.interfaces.hl7v2.mapping_helpers import assert_valid, mapped

A40 = (
    "MSH|^~\\&|ADT|HOSP|EHR|HOSP|20260102101500||ADT^A40^ADT_A39|M40|P|2.5.1\r"
    "EVN|A40|20260102101500\r"
    "PID|1||NEW-1^^^HOSP&1.2.3.4&ISO^MR||DOE^JANE||19700101|F\r"
    "MRG|OLD-7^^^HOSP&1.2.3.4&ISO^MR\r"
    "ZXX|ignored\r"
)


def test_merge_entries() -> None:
    bundle = mapped(A40.encode())
    assert_valid(bundle)
    survivor, retired = bundle["entry"]
    assert survivor["request"] == {"method": "PUT", "url": "Patient?identifier=urn:oid:1.2.3.4|NEW-1"}
    assert survivor["resource"]["link"] == [
        {"other": {"reference": "Patient?identifier=urn:oid:1.2.3.4|OLD-7"}, "type": "replaces"}]
    assert retired["request"] == {"method": "PATCH", "url": "Patient?identifier=urn:oid:1.2.3.4|OLD-7"}
    patched = apply({"resourceType": "Patient", "active": True}, check_parameters(retired["resource"]))
    assert patched == {"resourceType": "Patient", "active": False,
                       "link": [{"other": {"reference": survivor["fullUrl"]}, "type": "replaced-by"}]}


def test_merge_keys() -> None:
    assert merge_keys(parse(A40.encode())) == ("urn:oid:1.2.3.4|NEW-1", "urn:oid:1.2.3.4|OLD-7")


@pytest.mark.parametrize("mrg", ["MRG|", "MRG|^^^HOSP"])
def test_empty_mrg1(mrg: str) -> None:
    raw = A40.replace("MRG|OLD-7^^^HOSP&1.2.3.4&ISO^MR", mrg).encode()
    for call in (lambda: mapped(raw), lambda: merge_keys(parse(raw))):
        with pytest.raises(Rejected) as caught:
            call()
        error = caught.value
        assert (error.code, error.location, error.reject) == (Code.REQUIRED_FIELD, ("MRG", 1, 1), False)


def test_merging_a_patient_into_itself() -> None:
    raw = A40.replace("OLD-7", "NEW-1").encode()
    with pytest.raises(Rejected) as caught:
        mapped(raw)
    assert caught.value.code is Code.DUPLICATE_KEY and "NEW-1" not in caught.value.text


def test_other_adt_triggers_are_refused() -> None:
    with pytest.raises(Rejected) as caught:
        mapped(A40.replace("ADT^A40^ADT_A39", "ADT^A41^ADT_A39").encode())
    assert caught.value.reject and caught.value.code is Code.UNSUPPORTED_EVENT
