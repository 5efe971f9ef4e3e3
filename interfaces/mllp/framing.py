"""MLLP Release 2 block framing: ``<VT> payload <FS><CR>``, as a pure incremental decoder.

HL7 Transport Specification: MLLP, Release 2, "Block format": a block is the start byte 0x0B,
the HL7 payload, and the two end bytes 0x1C 0x0D. The payload may not contain 0x0B or 0x1C
(they are not in the HL7 v2 character repertoire), which is why those two bytes can
resynchronise a stream after an error.

The decoder is fed whatever chunks the network delivers and returns, in order, one
:class:`Frame` per complete block and one :class:`FramingError` per stretch of bytes it had to
drop. Dropped bytes are not fatal: the stream resynchronises at the next start byte.

* Bytes before a start byte are discarded and reported once the next start byte (or the end of
  the stream) shows how many there were.
* A start byte inside a payload means the previous block was never terminated: that block is
  reported and dropped, and a new one begins at the new start byte.
* An end byte 0x1C followed by anything but 0x0D ends the block as malformed; it is dropped and
  the byte after the 0x1C is read again as the start of what follows.

One limit is fatal: a payload longer than ``max_bytes`` raises :class:`FrameTooLarge`. Nothing
of such a block is kept, so no ACK can be built for it (the control id is in a message the
receiver never saw whole); the server closes the connection without a reply, and the sender
is expected to notice and escalate rather than retry the same message forever.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_FS = 0x1C
_CR = 0x0D
_SPECIAL = re.compile(rb"[\x0b\x1c]")


@dataclass(frozen=True)
class Frame:
    """One complete block's payload, without the framing bytes."""

    payload: bytes


@dataclass(frozen=True)
class FramingError:
    """Bytes dropped to resynchronise: how many, and why (never what they were)."""

    reason: str
    discarded: int


class FrameTooLarge(Exception):
    """A payload exceeded the limit; the connection cannot be resynchronised safely."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"MLLP payload exceeds {limit} bytes")
        self.limit = limit


Event = Frame | FramingError


def encode(payload: bytes) -> bytes:
    """Frame one payload; one holding 0x0B or 0x1C would corrupt the stream, so it is refused."""
    if _SPECIAL.search(payload):
        raise ValueError("an MLLP payload may not contain 0x0B or 0x1C")
    return START_BLOCK + payload + END_BLOCK


class Decoder:
    """Incremental MLLP decoder for one connection; holds at most ``max_bytes`` of payload."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._payload = bytearray()
        self._in_block = False
        self._saw_fs = False
        self._outside = 0

    def feed(self, data: bytes) -> Iterator[Event]:
        """Decode one chunk, lazily: iterate to the end before feeding the next one.

        Blocks that complete before an oversized payload in the same chunk are yielded first;
        :class:`FrameTooLarge` is raised where the limit is passed.
        """
        pos = 0
        while pos < len(data):
            events: list[Event] = []
            if not self._in_block:
                pos = self._hunt(data, pos, events)
            elif self._saw_fs:
                pos = self._expect_cr(data, pos, events)
            else:
                pos = self._take_payload(data, pos, events)
            yield from events

    def finish(self) -> list[Event]:
        """The stream ended: report whatever was left over, and reset."""
        events: list[Event] = []
        if self._in_block:
            self._drop_block("stream ended inside a block", events)
        self._report_outside(events)
        return events

    def _hunt(self, data: bytes, pos: int, events: list[Event]) -> int:
        start = data.find(START_BLOCK, pos)
        if start < 0:
            self._outside += len(data) - pos
            return len(data)
        self._outside += start - pos
        self._report_outside(events)
        self._in_block = True
        return start + 1

    def _take_payload(self, data: bytes, pos: int, events: list[Event]) -> int:
        match = _SPECIAL.search(data, pos)
        end = match.start() if match else len(data)
        if len(self._payload) + end - pos > self._max_bytes:
            self._reset()
            raise FrameTooLarge(self._max_bytes)
        self._payload += data[pos:end]
        if match is None:
            return end
        if data[end] == _FS:
            self._saw_fs = True
        else:
            self._drop_block("start block inside an unterminated block", events)
            self._in_block = True
        return end + 1

    def _expect_cr(self, data: bytes, pos: int, events: list[Event]) -> int:
        if data[pos] != _CR:
            self._drop_block("end block not followed by carriage return", events)
            return pos
        events.append(Frame(bytes(self._payload)))
        self._reset()
        return pos + 1

    def _drop_block(self, reason: str, events: list[Event]) -> None:
        # The start byte, the payload so far and a dangling 0x1C were all read and are lost.
        events.append(FramingError(reason, 1 + len(self._payload) + self._saw_fs))
        self._reset()

    def _report_outside(self, events: list[Event]) -> None:
        if self._outside:
            events.append(FramingError("bytes outside a block", self._outside))
            self._outside = 0

    def _reset(self) -> None:
        self._payload = bytearray()
        self._in_block = False
        self._saw_fs = False
