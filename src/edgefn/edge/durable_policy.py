"""Durable objects' rules (pure): ids, the object record, its lease and fencing, storage ops.

One record per object in the strong KV's home bucket (``edgefn-kvhome``, Raft-replicated in the
core's JetStream; docs/design/0027-durable-objects.md), key ``=do.<function>.<class>.<id>``
(``=`` cannot start a KV namespace, so no function's KV keys reach it). The record holds the
object's **home** (``holder``), its **lease** (``lease_until_ms``), an **epoch** counted up at
every change of home, the object's whole **storage** (``data``) and its **alarm**.

- A location serves an object only while it holds a live lease on its record; it claims a free
  one (no record, or a lease that ran out) by compare-and-set, so at most one location is the
  home at a time. The home stops serving ``SAFETY_MS`` before its lease ends (clock skew), and
  another may claim only after it ended.
- Every storage write is a compare-and-set of the whole record on the revision the home last
  wrote or read. A stale home (its lease taken over while it was cut off, or a worker of an old
  home still running) writes on an old revision and is refused: **fencing**. A write is
  acknowledged to the function only once the store accepted it, so a new home reads every
  acknowledged write.

Storage values are anything msgpack encodes (None, bool, int, float, str, bytes, lists, dicts);
a record is at most ``MAX_RECORD_BYTES`` encoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

__all__ = [
    "LEASE_MS",
    "MAX_INDEXED_ALARMS",
    "MAX_RECORD_BYTES",
    "Record",
    "StorageError",
    "alarm_index_key",
    "alarm_member",
    "apply_op",
    "claimed",
    "decode_index",
    "decode_record",
    "encode_index",
    "encode_record",
    "indexed",
    "record_key",
    "released",
    "renewed",
    "valid_id",
    "where",
]

LEASE_MS: Final = 10_000
RENEW_BELOW_MS: Final = 6_000  # renew before serving when less than this is left
SAFETY_MS: Final = 1_000
MAX_RECORD_BYTES: Final = 512 * 1024
MAX_KEY_CHARS: Final = 2048
MAX_KEYS_PER_OP: Final = 128
MAX_TXN_OPS: Final = 128
_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")


class Record(msgspec.Struct, frozen=True):
    holder: str = ""
    epoch: int = 0
    lease_until_ms: int = 0
    data: dict[str, Any] = {}
    alarm_ms: int = 0  # 0: no alarm


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Record)


def valid_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


def record_key(function: str, class_name: str, oid: str) -> str:
    return f"=do.{function}.{class_name}.{oid}"


MAX_INDEXED_ALARMS: Final = 4096


def alarm_index_key(function: str) -> str:
    """The function's alarm index: which of its objects have an alarm set, and when (so that a
    due alarm of an object whose home died wakes the object without waiting for a request)."""
    return f"=doalarm.{function}"


def alarm_member(class_name: str, oid: str) -> str:
    return f"{class_name}\n{oid}"


def indexed(index: dict[str, int], member: str, due_ms: int) -> dict[str, int]:
    """``index`` with ``member``'s alarm at ``due_ms`` (0: none). Raises StorageError when the
    index is full."""
    out = dict(index)
    if due_ms:
        if member not in out and len(out) >= MAX_INDEXED_ALARMS:
            raise StorageError(
                "storage_full",
                f"at most {MAX_INDEXED_ALARMS} objects of a function have an alarm set",
            )
        out[member] = due_ms
    else:
        out.pop(member, None)
    return out


def decode_index(data: bytes | None) -> dict[str, int]:
    if not data:
        return {}
    try:
        raw = msgspec.msgpack.decode(data, type=dict[str, int])
    except msgspec.DecodeError as err:
        raise ValueError(f"not an alarm index: {err}") from None
    return raw


def encode_index(index: dict[str, int]) -> bytes:
    return _enc.encode(index)


def encode_record(record: Record) -> bytes:
    return _enc.encode(record)


def decode_record(data: bytes) -> Record:
    try:
        return _dec.decode(data)
    except msgspec.DecodeError as err:
        raise ValueError(f"not a durable object record: {err}") from None


def where(
    record: Record | None, me: str, now_ms: int
) -> tuple[Literal["mine", "held", "free"], str]:
    """Who serves the object now: this location, another one (named), or nobody."""
    if record is None or not record.holder or record.lease_until_ms <= now_ms:
        return "free", ""
    if record.holder == me:
        return ("mine", me) if now_ms < record.lease_until_ms - SAFETY_MS else ("free", "")
    return "held", record.holder


def claimed(record: Record | None, me: str, now_ms: int) -> Record:
    """The record with this location as the object's home (a new epoch) for a new lease."""
    base = record or Record()
    return msgspec.structs.replace(
        base, holder=me, epoch=base.epoch + 1, lease_until_ms=now_ms + LEASE_MS
    )


def renewed(record: Record, now_ms: int) -> Record:
    return msgspec.structs.replace(record, lease_until_ms=now_ms + LEASE_MS)


def released(record: Record) -> Record:
    """The home lets go (idle, or stopping): anyone may claim at once."""
    return msgspec.structs.replace(record, lease_until_ms=0)


@dataclass(frozen=True, slots=True)
class StorageError(Exception):
    kind: str  # "invalid" (the function's mistake) or "storage_full"
    message: str

    @property
    def kv_kind(self) -> str:
        """The error kind the function's storage call fails with (KVLimitError or KVError)."""
        return "limit" if self.kind == "storage_full" else "error"

    def __str__(self) -> str:
        return self.message


def _keys(args: dict[str, Any]) -> list[str]:
    keys = args.get("keys")
    if not isinstance(keys, list) or len(keys) > MAX_KEYS_PER_OP:
        raise StorageError("invalid", f"keys must be a list of at most {MAX_KEYS_PER_OP} strings")
    for key in keys:
        _check_key(key)
    return keys


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise StorageError(
            "invalid", f"a storage key is a non-empty str of at most {MAX_KEY_CHARS} characters"
        )


def _step(data: dict[str, Any], op: str, args: dict[str, Any]) -> Any:
    """Apply one op to ``data`` in place; returns its result."""
    if op == "get":
        return {k: data[k] for k in _keys(args) if k in data}
    if op == "put":
        entries = args.get("entries")
        if not isinstance(entries, dict) or len(entries) > MAX_KEYS_PER_OP:
            raise StorageError("invalid", f"put takes at most {MAX_KEYS_PER_OP} entries")
        for key in entries:
            _check_key(key)
        data.update(entries)
        return None
    if op == "delete":
        n = 0
        for key in _keys(args):
            if key in data:
                del data[key]
                n += 1
        return n
    if op == "list":
        prefix, start = args.get("prefix", ""), args.get("start", "")
        limit, reverse = args.get("limit", 1000), args.get("reverse", False)
        if not (isinstance(prefix, str) and isinstance(start, str) and isinstance(reverse, bool)):
            raise StorageError("invalid", "list takes prefix and start (str) and reverse (bool)")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise StorageError("invalid", "list limit must be an int from 1 to 1000")
        keys = sorted((k for k in data if k.startswith(prefix) and k >= start), reverse=reverse)
        return [[k, data[k]] for k in keys[:limit]]
    raise StorageError("invalid", f"unknown storage operation {op[:40]!r}")


WRITES: Final = frozenset({"put", "delete", "txn", "set_alarm", "delete_alarm"})


def apply_op(record: Record, op: str, args: dict[str, Any]) -> tuple[Record | None, Any]:
    """``op`` on the object's storage: (the new record, or None if nothing changed; result).

    ``txn`` applies its ``ops`` (a list of [op, args]) all or nothing and returns their results.
    Raises StorageError for a bad op or a record that would exceed ``MAX_RECORD_BYTES``.
    """
    if not isinstance(args, dict):
        raise StorageError("invalid", "storage arguments must be a dict")
    if op == "get_alarm":
        return None, record.alarm_ms or None
    if op in ("set_alarm", "delete_alarm"):
        when = args.get("ms", 0) if op == "set_alarm" else 0
        if not isinstance(when, int) or isinstance(when, bool) or when < 0:
            raise StorageError("invalid", "set_alarm takes a time in ms since the epoch")
        return msgspec.structs.replace(record, alarm_ms=when), None
    data = dict(record.data)
    if op == "txn":
        ops = args.get("ops")
        if not isinstance(ops, list) or len(ops) > MAX_TXN_OPS:
            raise StorageError("invalid", f"a transaction holds at most {MAX_TXN_OPS} operations")
        results = []
        for item in ops:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict)):
                raise StorageError("invalid", "a transaction's operations are [op, args] pairs")
            if item[0] not in ("get", "put", "delete", "list"):
                raise StorageError("invalid", f"{str(item[0])[:40]!r} cannot run in a transaction")
            results.append(_step(data, str(item[0]), item[1]))
        result: Any = results
    else:
        result = _step(data, op, args)
    if op not in WRITES:
        return None, result
    new = msgspec.structs.replace(record, data=data)
    try:
        size = len(encode_record(new))
    except (TypeError, OverflowError, msgspec.EncodeError) as err:
        # OverflowError: an int outside msgpack's 64-bit range.
        raise StorageError("invalid", f"a stored value cannot be encoded: {err}") from None
    if size > MAX_RECORD_BYTES:
        raise StorageError(
            "storage_full",
            f"the object's storage would be {size} bytes, over {MAX_RECORD_BYTES}: delete keys, "
            "or spread the data over more objects",
        )
    return new, result
