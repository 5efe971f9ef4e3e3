"""MLLP block framing: round trips under any chunking, and resynchronisation after bad bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interfaces.mllp.framing import Decoder, Event, Frame, FrameTooLarge, FramingError, encode

payloads = st.binary(max_size=300).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
# Garbage rich in the bytes that matter to the decoder, plus arbitrary binary.
tokens = st.sampled_from([b"\x0b", b"\x1c", b"\x0d", b"\x1c\x0d", b"MSH|", b"x" * 20])
garbage = st.one_of(st.binary(max_size=400), st.lists(tokens, max_size=60).map(b"".join))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def decode(chunks: list[bytes], max_bytes: int = 1 << 20) -> list[Event]:
    decoder = Decoder(max_bytes)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.finish()


def frames(events: list[Event]) -> list[bytes]:
    return [event.payload for event in events if isinstance(event, Frame)]


@settings(deadline=None)  # no per-example deadline: CI machines are busy
@given(st.lists(payloads, max_size=20), st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_decodes_the_same_payloads(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode(m) for m in messages)
    events = decode(chunked(stream, cuts))
    assert events == [Frame(m) for m in messages]


@settings(deadline=None)  # no per-example deadline: CI machines are busy
@given(garbage, st.lists(st.integers(min_value=0), max_size=20))
def test_garbage_yields_only_framed_payloads_and_accounts_for_every_byte(data: bytes, cuts: list[int]) -> None:
    try:
        events = decode(chunked(data, cuts), max_bytes=64)
    except FrameTooLarge:
        return
    for payload in frames(events):
        assert encode(payload) in data
    framed = sum(len(p) + 3 for p in frames(events))
    dropped = sum(e.discarded for e in events if isinstance(e, FramingError))
    assert framed + dropped == len(data)


@settings(deadline=None)  # no per-example deadline: CI machines are busy
@given(garbage, st.lists(payloads, min_size=1, max_size=5), st.lists(st.integers(min_value=0), max_size=20))
def test_stream_resynchronises_at_the_next_block(junk: bytes, messages: list[bytes], cuts: list[int]) -> None:
    stream = junk + b"".join(encode(m) for m in messages)
    decoded = frames(decode(chunked(stream, cuts)))
    assert decoded[-len(messages) :] == messages


def test_bytes_before_a_block_are_one_framing_error() -> None:
    decoder = Decoder(100)
    assert list(decoder.feed(b"noise")) == []
    assert list(decoder.feed(b"!\x0bA\x1c\r")) == [FramingError("bytes outside a block", 6), Frame(b"A")]


def test_start_block_inside_a_block_restarts_it() -> None:
    events = list(Decoder(100).feed(b"\x0bhalf\x0bwhole\x1c\r"))
    assert events == [FramingError("start block inside an unterminated block", 5), Frame(b"whole")]


def test_end_block_without_carriage_return_drops_the_block() -> None:
    events = list(Decoder(100).feed(b"\x0bbad\x1cX\x0bgood\x1c\r"))
    assert events == [
        FramingError("end block not followed by carriage return", 5),
        FramingError("bytes outside a block", 1),
        Frame(b"good"),
    ]


def test_stream_ending_inside_a_block_is_reported() -> None:
    decoder = Decoder(100)
    assert list(decoder.feed(b"\x0bpart")) == []
    assert decoder.finish() == [FramingError("stream ended inside a block", 5)]


def test_payload_over_the_limit_is_fatal_before_it_is_buffered() -> None:
    decoder = Decoder(8)
    assert list(decoder.feed(b"\x0b12345678\x1c\r")) == [Frame(b"12345678")]
    assert list(decoder.feed(b"\x0b1234")) == []
    with pytest.raises(FrameTooLarge):
        list(decoder.feed(b"56789"))


def test_blocks_before_an_oversized_one_in_the_same_chunk_are_yielded_first() -> None:
    events = Decoder(8).feed(b"\x0bsmall\x1c\r\x0b123456789\x1c\r")
    assert next(events) == Frame(b"small")
    with pytest.raises(FrameTooLarge):
        next(events)


def test_encode_refuses_payloads_that_would_break_framing() -> None:
    assert encode(b"MSH|") == b"\x0bMSH|\x1c\r"
    for bad in (b"a\x0bb", b"a\x1cb"):
        with pytest.raises(ValueError):
            encode(bad)
