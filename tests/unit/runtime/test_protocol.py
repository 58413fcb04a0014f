"""IPC frames: round trips, partial delivery, and malformed input."""

from __future__ import annotations

import struct

import pytest

from edgefn.errors import ProtocolError
from edgefn.runtime import protocol as p


def test_round_trip_across_partial_reads() -> None:
    msgs: list[p.Message] = [
        p.Invoke(1, "GET", "http://a/", [("h", "v")], b"body", "fra", "", "rid"),
        p.ResponseChunk(1, b"x" * 70_000),
        p.Cancel(2),
    ]
    data = b"".join(p.encode(m) for m in msgs)
    buf = p.FrameBuffer()
    out: list[p.Message] = []
    for i in range(0, len(data), 7):
        out += buf.feed(data[i : i + 7])
    assert out == msgs


def test_oversized_length_is_refused() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        p.FrameBuffer().feed(struct.pack(">I", p.MAX_FRAME_BYTES + 1))


def test_garbage_payload_is_refused() -> None:
    with pytest.raises(ProtocolError, match="malformed IPC frame"):
        p.FrameBuffer().feed(struct.pack(">I", 3) + b"\xc1\xc1\xc1")


def test_unknown_tag_is_refused() -> None:
    import msgspec

    payload = msgspec.msgpack.encode(["nope", 1])
    with pytest.raises(ProtocolError, match="malformed"):
        p.decode(payload)


def test_truncated_header() -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        p.decode_length(b"\x00\x01")
