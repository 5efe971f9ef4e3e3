"""The HL7 v2 benchmark at a tiny scale: ``ehr serve``'s MLLP/TLS listener and the bare baseline get
the same ORU^R01 messages, and every ACK must be AA for its own control id."""

from __future__ import annotations

import pytest

from tests.benchmarks import run
from tests.benchmarks.load import Load
from tests.benchmarks.mllp_load import _status, oru_messages

pytestmark = pytest.mark.slow

TINY = run.Plan(loads=[], warm_up=[], search_loads=[], search_scale=0,
                mllp_loads=[Load("oru-mllp", 1, 5), Load("oru-mllp", 3, 12)])


async def test_both_listeners_acknowledge_every_message() -> None:
    done = await run.run_engine("sqlite", TINY)
    assert done.error is None and done.failures == 0, (done.error, done.log_problems)
    measured = {(m.server, m.result.concurrency): m.result for m in done.measurements}
    assert set(measured) == {("full", 1), ("bare", 1), ("full", 3), ("bare", 3)}
    assert all(r.statuses[200] == r.requests for r in measured.values())


def test_an_ack_counts_only_for_its_own_message() -> None:
    first, second = oru_messages(2, "t")
    ack = b"\x0bMSH|^~\\&|EHR|HOSP|LIS|LAB|20260101||ACK|1|P|2.5.1\rMSA|AA|t-0\r\x1c\r"
    assert (_status(ack, first), _status(ack, second)) == (200, 0)
