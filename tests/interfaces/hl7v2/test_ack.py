"""ACK messages: MSA codes, ERR segments per version, enhanced mode's conditions, escaping."""

from __future__ import annotations

import dataclasses

import hl7
import pytest

from interfaces.hl7v2.ack import ACCEPTED, Outcome, acknowledgments
from interfaces.hl7v2.errors import Code, Rejected
from interfaces.hl7v2.message import header_of

MSH = "MSH|^~\\&|LAB|ACME|EHR|HOSP|20260101120000||ORU^R01|C1|P|{version}|||{accept}|{application}\r"
BAD = Rejected(Code.DATA_TYPE, "OBX-5 of OBX 2 is not a number", location=("OBX", 2, 5))


def _header(version: str = "2.5.1", accept: str = "", application: str = ""):  # type: ignore[no-untyped-def]
    return header_of(MSH.format(version=version, accept=accept, application=application))


def _msa(reply: str) -> tuple[str, str]:
    message = hl7.parse(reply)
    return str(message.segment("MSA")[1]), str(message.segment("MSA")[2])


def test_original_mode_accepts_with_aa() -> None:
    (reply,) = acknowledgments(_header(), ACCEPTED)
    message = hl7.parse(reply)
    assert _msa(reply) == ("AA", "C1")
    assert str(message.segment("MSH")[9]) == "ACK^R01^ACK"
    # sender and receiver swap places
    assert [str(message.segment("MSH")[n]) for n in (3, 4, 5, 6)] == ["EHR", "HOSP", "LAB", "ACME"]


def test_error_on_2_5_names_location_code_and_severity() -> None:
    (reply,) = acknowledgments(_header(), Outcome.of(BAD))
    err = hl7.parse(reply).segment("ERR")
    assert _msa(reply) == ("AE", "C1")
    assert str(err[2]) == "OBX^2^5" and str(err[3]) == "102^Data type error^HL70357" and str(err[4]) == "E"
    assert str(err[8]) == BAD.text


def test_error_before_2_5_uses_err_1() -> None:
    (reply,) = acknowledgments(_header("2.3"), Outcome.of(BAD))
    err = hl7.parse(reply).segment("ERR")
    assert str(err[1]).startswith("OBX^2^5^102&")


def test_reject_is_ar() -> None:
    refused = Rejected(Code.UNSUPPORTED_MESSAGE_TYPE, "not registered", reject=True)
    assert _msa(acknowledgments(_header(), Outcome.of(refused))[0])[0] == "AR"


@pytest.mark.parametrize(
    ("accept", "application", "outcome", "codes"),
    [
        ("AL", "AL", ACCEPTED, ["CA", "AA"]),
        ("AL", "NE", ACCEPTED, ["CA"]),
        ("NE", "AL", ACCEPTED, ["AA"]),
        ("NE", "NE", ACCEPTED, []),
        ("ER", "ER", ACCEPTED, []),
        ("ER", "ER", Outcome.of(BAD), ["AE"]),
        ("SU", "SU", Outcome.of(BAD), ["CA"]),  # accepted for processing, the content failed
        ("AL", "AL", Outcome.of(dataclasses.replace(BAD, reject=True)), ["CR"]),
        ("ER", "AL", Outcome("AR", (BAD,), internal=True), ["CE"]),
    ],
)
def test_enhanced_mode(accept: str, application: str, outcome: Outcome, codes: list[str]) -> None:
    replies = acknowledgments(_header(accept=accept, application=application), outcome)
    assert [_msa(reply)[0] for reply in replies] == codes


def test_echoed_values_are_escaped() -> None:
    header = dataclasses.replace(_header(), control_id="A|B^C")
    (reply,) = acknowledgments(header, ACCEPTED)
    assert "MSA|AA|A\\F\\B\\S\\C\r" in reply
