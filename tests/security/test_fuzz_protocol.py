"""Fuzz the IPC frame decoder: random and mutated frames give a message or a ProtocolError."""

from __future__ import annotations

import struct
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.errors import ProtocolError
from edgefn.runtime import protocol as p

MESSAGE_TYPES = typing.get_args(p.Message)
SAMPLES = [
    p.encode(p.FetchCall(1, 2, "http://a.test/", "GET", [("x", "y")], b"body", 1000)),
    p.encode(p.FetchResult(1, 2, 200, [("a", "b")], b"ok")),
    p.encode(p.Invoke(3, "GET", "http://f.localhost/", [], b"", "here", "", "rid")),
    p.encode(p.Load("fn", "v1", "/code", "main.py", {"K": 1}, 128, ["KV"])),
    p.encode(p.Cancel(9)),
]


def _feed(chunks: list[bytes]) -> None:
    buf = p.FrameBuffer()
    for chunk in chunks:
        try:
            messages = buf.feed(chunk)
        except ProtocolError as caught:
            error = caught
            break
        assert all(isinstance(m, MESSAGE_TYPES) for m in messages)
    else:
        return
    # The receiver drops the peer after a ProtocolError; the error must say what was wrong.
    assert error.message


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_bytes(chunks: list[bytes]) -> None:
    _feed(chunks)


@settings(max_examples=300)
@given(st.data())
def test_mutated_valid_frames(data: st.DataObject) -> None:
    frame = bytearray(data.draw(st.sampled_from(SAMPLES)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    _feed([bytes(frame[:cut]), bytes(frame[cut:])])


@settings(max_examples=200)
@given(st.binary(max_size=256))
def test_decode_of_random_payload(payload: bytes) -> None:
    try:
        msg: p.Message | ProtocolError = p.decode(payload)
    except ProtocolError as caught:
        msg = caught
    if isinstance(msg, ProtocolError):
        assert "malformed IPC frame" in msg.message
    else:
        assert p.encode(msg)


@pytest.mark.parametrize("length", [p.MAX_FRAME_BYTES + 1, 2**32 - 1])
def test_oversize_length_prefix_is_refused_before_buffering(length: int) -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        p.FrameBuffer().feed(struct.pack(">I", length) + b"\x00")
