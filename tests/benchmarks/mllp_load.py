"""The HL7 v2 load: ORU^R01 messages (five OBX each) over MLLP/TLS, one ACK awaited per message per
connection (how lab systems send: the next message after the ACK), every ACK checked.

Each message has its own control id (the server ingests a repeated one only once) and its own
filler order number (a new DiagnosticReport); patients repeat, so most find their Patient by
identifier, as in a real feed. Results are :class:`LoadResult` s with MSA-1 AA counted as status 200
(AE 422, AR 403, a commit ACK CA 202), so they join the HTTP table and its ratios.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from tests.benchmarks.load import LoadResult, Target

START, END = b"\x0b", b"\x1c\r"
STATUS = {b"AA": 200, b"CA": 202, b"AR": 403, b"AE": 422}
PATIENTS = 500
_TESTS = (("718-7", "Hemoglobin", "g/dL", "13.2", "12-16"), ("4544-3", "Hematocrit", "%", "41", "36-46"),
          ("6690-2", "Leukocytes", "10*3/uL", "6.1", "4-11"), ("789-8", "Erythrocytes", "10*6/uL", "4.6", "4.2-5.4"),
          ("777-3", "Platelets", "10*3/uL", "250", "150-400"))


def oru_messages(count: int, prefix: str, facility: str = "DEMO-LAB") -> list[bytes]:
    return [_oru(f"{prefix}-{n}", n, facility) for n in range(count)]


def _oru(control_id: str, n: int, facility: str) -> bytes:
    patient = n % PATIENTS
    segments = [
        f"MSH|^~\\&|LIS|{facility}|EHR|HOSP|20260101120000+0000||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        f"PID|1||BENCH{patient:05d}^^^BENCHLAB&2.16.840.1.113883.3.999&ISO^MR||Family{patient}^Given^^^^^L"
        f"||19700101|F",
        f"OBR|1|P{control_id}|F{control_id}|58410-2^CBC panel^LN|||20260101110000+0000|||||||||||||||"
        f"20260101115500+0000|||F",
    ]
    for k, (code, name, unit, value, limits) in enumerate(_TESTS, start=1):
        segments.append(f"OBX|{k}|NM|{code}^{name}^LN||{value}|{unit}^{unit}^UCUM|{limits}|N|||F"
                        f"|||20260101110000+0000")
    return ("\r".join(segments) + "\r").encode()


async def run_mllp_load(
    target: Target, messages: Sequence[bytes], *, concurrency: int, time_limit: float
) -> LoadResult:
    result = LoadResult(len(messages), concurrency, 200)
    queue = list(reversed(messages))
    start = time.perf_counter()
    try:
        async with asyncio.timeout(time_limit):
            await asyncio.gather(*(_sender(target, queue, result) for _ in range(concurrency)))
    except TimeoutError:
        result.errors[f"run not finished within {time_limit:g} s"] += 1
    result.seconds = time.perf_counter() - start
    return result


async def _sender(target: Target, queue: list[bytes], result: LoadResult) -> None:
    try:
        reader, writer = await asyncio.open_connection(target.host, target.port, ssl=target.tls,
                                                       server_hostname="localhost")
    except OSError as exc:
        result.errors[type(exc).__name__] += 1
        return
    result.connections += 1
    try:
        while queue:
            message = queue.pop()
            began = time.perf_counter()
            writer.write(START + message + END)
            await writer.drain()
            ack = await reader.readuntil(END)
            result.latencies_ms.append((time.perf_counter() - began) * 1000)
            result.statuses[_status(ack, message)] += 1
    except (OSError, asyncio.IncompleteReadError) as exc:
        result.errors[type(exc).__name__] += 1
    finally:
        writer.close()


def _status(ack: bytes, message: bytes) -> int:
    """MSA-1 as a status; 0 when the ACK is not for this message's control id."""
    control_id = message.split(b"\r", 1)[0].split(b"|")[9]
    for segment in ack.strip(START + END).split(b"\r"):
        if segment.startswith(b"MSA|"):
            fields = segment.split(b"|")
            return STATUS.get(fields[1], 0) if len(fields) > 2 and fields[2] == control_id else 0
    return 0
