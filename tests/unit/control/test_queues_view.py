"""How ``/v1/queues`` shows a stored message (edgefn.control.queues_api._show): pure."""

from __future__ import annotations

import msgspec

from edgefn.bus.queue_format import PartitionRecord, QueueMessage
from edgefn.control.queues_api import _show


def test_bodies_show_as_json_can_and_attempts_and_waits_come_from_the_record() -> None:
    body = msgspec.msgpack.encode({"text": b"hi", "raw": [b"\xff\x00"], "n": 1, b"k": None})
    message = QueueMessage("id1", body, "a", 1_000, 5_000, seq=7)
    record = PartitionRecord(attempts={7: 2}, not_before={7: 9_000})
    shown = _show(message, record)
    assert shown["body"] == {"text": "hi", "raw": [{"hex": "ff00"}], "n": 1, "k": None}
    assert (shown["attempts"], shown["not_before_ms"]) == (2, 9_000)
    assert _show(message, None)["not_before_ms"] == 5_000
    broken = QueueMessage("id2", b"\xc1", None, 1, 0, seq=8)  # 0xc1: never valid msgpack
    assert _show(broken, None)["body"] == {"hex": "c1"}
