"""Telemetry rollups: what a node served, per key, cut every few seconds (pure).

A node records every function request it answered into an :class:`Accumulator`, under the key
(function, version, status class ``2xx``..``5xx``, client region). Each key keeps counts (requests,
cold starts, KV operations, subrequests, CPU µs), the latency sum in microseconds and the latency as a
DDSketch (the ``ddsketch`` library, 1% relative accuracy). :meth:`Accumulator.cut` ends the period
and returns it as a :class:`Rollup` with the node's next sequence number; an empty period is no
rollup and uses no number.

Rules:

* **Sequence numbers.** A rollup covers the contiguous range ``seq_first..seq_last`` of one node
  boot (``epoch``, random per process). A fresh cut covers one number; a merge of adjacent ones
  covers their union. A number is only ever sent in one rollup (the :class:`RollupBuffer` merges
  only rollups it never tried to send), so the receiver dedupes on ``(location, epoch,
  seq_first)``.
* **Merge** (:func:`merge_rollups`, :func:`merge_rows`) adds counts and sketch bins, which are
  integers, so it is exactly associative and commutative (the latency sum is in integer
  microseconds for that reason; there are no floats in a rollup).
* **Bounded.** At most ``max_keys`` keys per accumulator and per merged rollup. A request whose key
  does not fit is counted in the overflow row of its status class (function ``OVERFLOW``), never
  dropped; a merge keeps the ``max_keys`` smallest keys in sort order (so the kept set does not
  depend on the order of merges) and folds the rest into overflow.
* **Hostile input.** :func:`decode_rollup` bounds every field (string lengths, row and bin counts,
  non-negative counts, sketch counts that add up to the requests) before anything uses it.

Demand cells: beside the rows, a rollup counts each function's requests per client *cell* (the
client's signed position rounded to whole degrees, ``"35,140"``; :func:`client_cell`), at most
``MAX_DEMAND_CELLS`` per rollup (beyond that a request's cell is not counted, and
``demand_dropped`` says how many were not). Smart placement reads them (control/placement_driver.py):
a world region is too coarse to place a replica by.

CPU time: ``cpu_us_sum`` is the function's own CPU time over a key's requests, as its worker
measured each invocation's task (thread CPU time around every step of the task; the node's own
work, the KV calls it serves and ``wait_until`` tasks after the response are not in it).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

import msgspec
from ddsketch.ddsketch import BaseDDSketch, DDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

from edgefn.world import cell_of, cell_point, region_of

__all__ = [
    "MAX_BINS",
    "MAX_DEMAND_CELLS",
    "MAX_KEYS",
    "OVERFLOW",
    "RELATIVE_ACCURACY",
    "STATUS_CLASSES",
    "Accumulator",
    "AccumulatorStatistics",
    "BadRollup",
    "BufferStatistics",
    "DemandCell",
    "Rollup",
    "RollupBuffer",
    "Row",
    "Sketch",
    "client_cell",
    "client_region",
    "decode_rollup",
    "encode_rollup",
    "merge_rollups",
    "merge_rows",
    "merge_sketches",
    "quantiles",
    "status_class",
]

RELATIVE_ACCURACY = 0.01
MAX_KEYS = 256
MAX_DEMAND_CELLS = 512
# 1% accuracy covers 1 µs .. 1 hour in about 1,100 bins; more than this is a forged sketch.
MAX_BINS = 2048
OVERFLOW = "~overflow"
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
_MAX_NAME = 64
_LATENCY_MIN_MS = 0.001
_LATENCY_MAX_MS = 3_600_000.0
_MAX_COUNT = 2**53
_LATLON = re.compile(r"\s*(-?\d{1,3}(?:\.\d+)?)\s*,\s*(-?\d{1,3}(?:\.\d+)?)\s*")

Name = Annotated[str, msgspec.Meta(max_length=_MAX_NAME)]
Count = Annotated[int, msgspec.Meta(ge=0, le=_MAX_COUNT)]


class Sketch(msgspec.Struct, frozen=True, array_like=True):
    """A DDSketch's positive bins: ``bins[i]`` values fell in bin ``offset + i``; ``zero`` were 0."""

    offset: Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31)] = 0
    bins: Annotated[list[Count], msgspec.Meta(max_length=MAX_BINS)] = []
    zero: Count = 0

    @property
    def count(self) -> int:
        return self.zero + sum(self.bins)


class Row(msgspec.Struct, frozen=True, array_like=True):
    """One key's figures over a rollup's period."""

    function: Name
    version: Name
    status: Name
    client_region: Name
    requests: Count
    cold_starts: Count
    kv_ops: Count
    subrequests: Count
    latency_us_sum: Count
    latency: Sketch
    # The function's CPU time over these requests, in µs (its worker measures each invocation;
    # a rollup from a node that did not measure it decodes as 0).
    cpu_us_sum: Count = 0

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.function, self.version, self.status, self.client_region)


class DemandCell(msgspec.Struct, frozen=True, array_like=True):
    """Requests of ``function`` from clients in ``cell`` (``"lat,lon"`` in whole degrees)."""

    function: Name
    cell: Name
    requests: Count

    @property
    def key(self) -> tuple[str, str]:
        return (self.function, self.cell)


class Rollup(msgspec.Struct, frozen=True):
    """What one node served over ``[start_ms, end_ms)``: its rollups ``seq_first..seq_last``."""

    location: Name
    epoch: Name
    seq_first: Count
    seq_last: Count
    start_ms: Count
    end_ms: Count
    rows: Annotated[list[Row], msgspec.Meta(max_length=MAX_KEYS + len(STATUS_CLASSES))]
    # Requests per (function, client cell); a rollup from a node that does not count them has none.
    demand: Annotated[list[DemandCell], msgspec.Meta(max_length=MAX_DEMAND_CELLS)] = []
    demand_dropped: Count = 0

    @property
    def rollup_id(self) -> str:
        """The id the receiver dedupes on (also the JetStream ``Nats-Msg-Id``)."""
        return f"{self.location}.{self.epoch}.{self.seq_first}"

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.rows)


class BadRollup(ValueError):
    """A rollup that does not decode or breaks a rule (the message is dropped, not stored)."""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Rollup)


def encode_rollup(rollup: Rollup) -> bytes:
    return _ENCODER.encode(rollup)


def decode_rollup(data: bytes, *, max_bytes: int = 1 << 20) -> Rollup:
    """A rollup from the bus, every field checked; raises :class:`BadRollup`."""
    if len(data) > max_bytes:
        raise BadRollup(f"rollup of {len(data)} bytes is over {max_bytes}")
    try:
        rollup = _DECODER.decode(data)
    except msgspec.DecodeError as err:
        raise BadRollup(f"rollup does not decode: {err}") from None
    if rollup.seq_first > rollup.seq_last or rollup.start_ms > rollup.end_ms:
        raise BadRollup("rollup ranges run backwards (seq_first > seq_last or start > end)")
    keys = [r.key for r in rollup.rows]
    if len(set(keys)) != len(keys):
        raise BadRollup("rollup repeats a key")
    for row in rollup.rows:
        if row.status not in STATUS_CLASSES:
            raise BadRollup(f"status class {row.status!r} is not one of {STATUS_CLASSES}")
        if row.latency.count != row.requests:
            raise BadRollup(f"sketch of {row.key} counts {row.latency.count}, not {row.requests}")
    cells = [d.key for d in rollup.demand]
    if len(set(cells)) != len(cells):
        raise BadRollup("rollup repeats a demand cell")
    for d in rollup.demand:
        if cell_point(d.cell) is None:
            raise BadRollup(f"demand cell {d.cell!r} is not 'lat,lon' in whole degrees")
    return rollup


# -- keys ---------------------------------------------------------------------------------------


def status_class(status: int) -> str:
    """``2xx``..``5xx`` (a status below 200 counts as 2xx, above 599 as 5xx: never dropped)."""
    return STATUS_CLASSES[min(max(status // 100, 2), 5) - 2]


@functools.lru_cache(maxsize=4096)
def client_region(header: str | None) -> str:
    """The world region of a client position header (``lat,lon``, as the entry signs it).

    Anything else (no header, a city name sent straight to a node) is ``unknown``: the request
    path does not parse free text per request. Cached (bounded): the region test costs ~5 µs and
    clients repeat their positions.
    """
    point = _position(header)
    return "unknown" if point is None else region_of(*point)


def _position(header: str | None) -> tuple[float, float] | None:
    """(lat, lon) of a client position header, or None when it is none or out of range."""
    if not header:
        return None
    m = _LATLON.fullmatch(header)
    if m is None:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    return (lat, lon) if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0 else None


@functools.lru_cache(maxsize=4096)
def client_cell(header: str | None) -> str:
    """The demand cell of a client position header: ``"lat,lon"`` rounded to whole degrees
    (about 100 km), or ``""`` for no position (cached, bounded, like :func:`client_region`)."""
    point = _position(header)
    return "" if point is None else cell_of(*point)


# -- sketches -------------------------------------------------------------------------------------


def _to_sketch(dd: BaseDDSketch) -> Sketch:
    # The library's own protobuf encoder (ddsketch.pb.proto.StoreProto) reads these same fields;
    # we carry them in msgpack instead so that protobuf is not a dependency. Latencies are never
    # negative, so the negative store stays empty.
    store = dd._store
    bins = [round(b) for b in store.bins]
    lo = next((i for i, b in enumerate(bins) if b), len(bins))
    hi = len(bins) - next((i for i, b in enumerate(reversed(bins)) if b), len(bins))
    return Sketch(offset=store.offset + lo, bins=bins[lo:hi], zero=round(dd._zero_count))


def _from_sketch(sketch: Sketch) -> BaseDDSketch:
    # As ddsketch.pb.proto.DDSketchProto.from_proto builds one.
    store = DenseStore()
    for i, count in enumerate(sketch.bins):
        if count:
            store.add(sketch.offset + i, count)
    return BaseDDSketch(
        mapping=LogarithmicMapping(RELATIVE_ACCURACY),
        store=store,
        negative_store=DenseStore(),
        zero_count=float(sketch.zero),
    )


def merge_sketches(*sketches: Sketch) -> Sketch:
    """Bin-wise sum (what ``DenseStore.merge`` does), in integers: exact and order-free. Any
    number at once, into one list (merging n sketches pairwise would copy the bins n times)."""
    zero = sum(s.zero for s in sketches)
    filled = [s for s in sketches if s.bins]
    if len(filled) <= 1:
        only = filled[0] if filled else Sketch()
        return Sketch(offset=only.offset, bins=list(only.bins), zero=zero)
    lo = min(s.offset for s in filled)
    hi = max(s.offset + len(s.bins) for s in filled)
    bins = [0] * (hi - lo)
    for s in filled:
        start = s.offset - lo
        for i, count in enumerate(s.bins, start):
            bins[i] += count
    return Sketch(offset=lo, bins=bins, zero=zero)


def quantiles(sketch: Sketch, qs: Iterable[float]) -> list[float | None]:
    """Latency quantiles (ms) of ``sketch`` (None when it is empty), by the library."""
    dd = _from_sketch(sketch)
    out: list[float | None] = []
    for q in qs:
        value = dd.get_quantile_value(q)
        out.append(None if value is None else round(float(value), 3))
    return out


# -- rows and rollups ----------------------------------------------------------------------------


def _add_rows(a: Row, b: Row) -> Row:
    return Row(
        function=a.function,
        version=a.version,
        status=a.status,
        client_region=a.client_region,
        requests=a.requests + b.requests,
        cold_starts=a.cold_starts + b.cold_starts,
        kv_ops=a.kv_ops + b.kv_ops,
        subrequests=a.subrequests + b.subrequests,
        latency_us_sum=a.latency_us_sum + b.latency_us_sum,
        latency=merge_sketches(a.latency, b.latency),
        cpu_us_sum=a.cpu_us_sum + b.cpu_us_sum,
    )


def _as_overflow(row: Row) -> Row:
    return msgspec.structs.replace(row, function=OVERFLOW, version="", client_region="")


def merge_rows(a: Iterable[Row], b: Iterable[Row], *, max_keys: int = MAX_KEYS) -> list[Row]:
    """The rows of both, added by key, sorted; beyond ``max_keys`` keys folded into overflow."""
    by_key: dict[tuple[str, str, str, str], Row] = {}
    for row in (*a, *b):
        if row.function == OVERFLOW:
            row = _as_overflow(row)
        old = by_key.get(row.key)
        by_key[row.key] = row if old is None else _add_rows(old, row)
    regular = sorted(k for k in by_key if k[0] != OVERFLOW)
    for key in regular[max_keys:]:
        folded = _as_overflow(by_key.pop(key))
        old = by_key.get(folded.key)
        by_key[folded.key] = folded if old is None else _add_rows(old, folded)
    return [by_key[k] for k in sorted(by_key)]


def merge_rollups(a: Rollup, b: Rollup, *, max_keys: int = MAX_KEYS) -> Rollup:
    """One rollup for both (same node and boot; their ranges need not touch for the math)."""
    assert a.location == b.location, (a.location, b.location)
    assert a.epoch == b.epoch, (a.epoch, b.epoch)
    demand, dropped = _merge_demand(a, b)
    return Rollup(
        location=a.location,
        epoch=a.epoch,
        seq_first=min(a.seq_first, b.seq_first),
        seq_last=max(a.seq_last, b.seq_last),
        start_ms=min(a.start_ms, b.start_ms),
        end_ms=max(a.end_ms, b.end_ms),
        rows=merge_rows(a.rows, b.rows, max_keys=max_keys),
        demand=demand,
        demand_dropped=dropped,
    )


def _merge_demand(a: Rollup, b: Rollup) -> tuple[list[DemandCell], int]:
    """Both rollups' demand cells added by key; beyond MAX_DEMAND_CELLS the largest keys in sort
    order are dropped (and counted), so the result does not depend on the order of merges."""
    counts: dict[tuple[str, str], int] = {}
    for d in (*a.demand, *b.demand):
        counts[d.key] = counts.get(d.key, 0) + d.requests
    keys = sorted(counts)
    dropped = sum(counts[k] for k in keys[MAX_DEMAND_CELLS:])
    kept = [DemandCell(f, c, counts[(f, c)]) for f, c in keys[:MAX_DEMAND_CELLS]]
    return kept, a.demand_dropped + b.demand_dropped + dropped


# -- the node's accumulator ---------------------------------------------------------------------


def _clamp(latency_ms: float) -> float:
    # Under 1 µs is 0 (the sketch's zero bin) and an hour is the most: so every sketch spans at
    # most ~1,100 bins of 1% and a merged one stays under MAX_BINS.
    if not math.isfinite(latency_ms) or latency_ms < _LATENCY_MIN_MS:
        return 0.0
    return min(latency_ms, _LATENCY_MAX_MS)


class _Cell:
    __slots__ = ("cold", "cpu_us", "kv", "latency", "latency_us", "requests", "sub")

    def __init__(self) -> None:
        self.requests = 0
        self.cold = 0
        self.kv = 0
        self.sub = 0
        self.latency_us = 0
        self.cpu_us = 0
        self.latency = DDSketch(RELATIVE_ACCURACY)


@dataclass(frozen=True, slots=True)
class AccumulatorStatistics:
    keys: int
    requests_pending: int
    overflowed_total: int
    rollups_cut_total: int
    next_seq: int


class Accumulator:
    """Per-key figures since the last :meth:`cut`. ``record`` per request, ``cut`` per period."""

    def __init__(self, *, location: str, epoch: str, start_ms: int, max_keys: int = MAX_KEYS):
        self.location = location
        self.epoch = epoch
        self.max_keys = max_keys
        self._cells: dict[tuple[str, str, str, str], _Cell] = {}
        self._by_args: dict[tuple[str, str, int, str], _Cell] = {}
        self._regular = 0  # keys other than the overflow rows
        self._demand: dict[tuple[str, str], int] = {}
        self._demand_dropped = 0
        self._start_ms = start_ms
        self._seq = 1
        self._overflowed = 0
        self._cut = 0

    def record(
        self,
        function: str,
        version: str,
        status: int,
        region: str,
        latency_ms: float,
        *,
        cold: bool = False,
        kv_ops: int = 0,
        subrequests: int = 0,
        cpu_us: int = 0,
        demand_cell: str = "",
    ) -> None:
        # The request path calls this per request: the cell of a key seen this period is found
        # by the arguments as given, before any of them is bounded or classified.
        cell = self._by_args.get((function, version, status, region))
        if cell is None:
            cell = self._cell(function, version, status, region)
        if not _LATENCY_MIN_MS <= latency_ms <= _LATENCY_MAX_MS:
            latency_ms = _clamp(latency_ms)  # also NaN, which fails both comparisons
        cell.requests += 1
        cell.cold += cold
        cell.kv += kv_ops
        cell.sub += subrequests
        cell.cpu_us += max(0, cpu_us)
        cell.latency_us += round(latency_ms * 1000)
        cell.latency.add(latency_ms)
        if demand_cell:
            key = (function, demand_cell)
            count = self._demand.get(key)
            if count is not None:
                self._demand[key] = count + 1
            elif len(self._demand) < MAX_DEMAND_CELLS and len(function) <= _MAX_NAME:
                self._demand[key] = 1
            else:
                self._demand_dropped += 1

    def _cell(self, function: str, version: str, status: int, region: str) -> _Cell:
        key = (function[:_MAX_NAME], version[:_MAX_NAME], status_class(status), region[:_MAX_NAME])
        cell = self._cells.get(key)
        if cell is None:
            if self._regular >= self.max_keys:
                self._overflowed += 1
                key = (OVERFLOW, "", key[2], "")
            else:
                self._regular += 1
            cell = self._cells.get(key)
            if cell is None:
                cell = self._cells[key] = _Cell()
        if key[0] != OVERFLOW and len(self._by_args) < 4 * self.max_keys:
            # Overflowing arguments are not remembered: each of them counts as overflowed.
            self._by_args[(function, version, status, region)] = cell
        return cell

    def cut(self, now_ms: int) -> Rollup | None:
        """End the period at ``now_ms``: its rollup (None if nothing was served)."""
        start, self._start_ms = self._start_ms, max(now_ms, self._start_ms)
        if not self._cells:
            return None
        rows = [
            Row(
                function=k[0],
                version=k[1],
                status=k[2],
                client_region=k[3],
                requests=c.requests,
                cold_starts=c.cold,
                kv_ops=c.kv,
                subrequests=c.sub,
                latency_us_sum=c.latency_us,
                latency=_to_sketch(c.latency),
                cpu_us_sum=c.cpu_us,
            )
            for k, c in sorted(self._cells.items())
        ]
        demand = [DemandCell(f, c, n) for (f, c), n in sorted(self._demand.items())]
        dropped, self._demand, self._demand_dropped = self._demand_dropped, {}, 0
        self._cells = {}
        self._by_args = {}
        self._regular = 0
        seq, self._seq = self._seq, self._seq + 1
        self._cut += 1
        return Rollup(
            location=self.location,
            epoch=self.epoch,
            seq_first=seq,
            seq_last=seq,
            start_ms=start,
            end_ms=self._start_ms,
            rows=rows,
            demand=demand,
            demand_dropped=dropped,
        )

    def statistics(self) -> AccumulatorStatistics:
        return AccumulatorStatistics(
            keys=len(self._cells),
            requests_pending=sum(c.requests for c in self._cells.values()),
            overflowed_total=self._overflowed,
            rollups_cut_total=self._cut,
            next_seq=self._seq,
        )


# -- the node's send buffer ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BufferStatistics:
    buffered: int
    in_flight: int
    merged_total: int
    acked_total: int
    requests_buffered: int


class RollupBuffer:
    """Rollups waiting for the receiver's acknowledgement, oldest first, at most ``capacity``.

    :meth:`take` hands out up to ``window`` of the oldest for sending and marks them in flight;
    from then on each is resent exactly as it was (same id, same content) until :meth:`acked`,
    so a lost acknowledgement never turns into a second, different count. When a new rollup
    would exceed ``capacity``, the adjacent pair of never-sent rollups spanning the least time is
    merged (oldest first on ties): nothing is dropped, only time resolution is lost.
    """

    def __init__(self, *, capacity: int = 720, window: int = 8, max_keys: int = MAX_KEYS):
        assert capacity >= window + 2, (capacity, window)
        self.capacity = capacity
        self.window = window
        self.max_keys = max_keys
        self._queue: list[Rollup] = []
        self._in_flight: set[str] = set()
        self._merged = 0
        self._acked = 0

    def push(self, rollup: Rollup) -> None:
        self._queue.append(rollup)
        while len(self._queue) > self.capacity:
            self._merge_one()

    def _merge_one(self) -> None:
        first = next(i for i, r in enumerate(self._queue) if r.rollup_id not in self._in_flight)
        best = min(
            range(first, len(self._queue) - 1),
            key=lambda i: (self._queue[i + 1].end_ms - self._queue[i].start_ms, i),
        )
        a, b = self._queue[best], self._queue[best + 1]
        self._queue[best : best + 2] = [merge_rollups(a, b, max_keys=self.max_keys)]
        self._merged += 1

    def take(self) -> list[Rollup]:
        """The oldest rollups to (re)send now, at most ``window``; they are in flight from now."""
        out = self._queue[: self.window]
        self._in_flight.update(r.rollup_id for r in out)
        return out

    def acked(self, rollup_id: str) -> None:
        before = len(self._queue)
        self._queue = [r for r in self._queue if r.rollup_id != rollup_id]
        self._in_flight.discard(rollup_id)
        self._acked += before - len(self._queue)

    def check_invariants(self) -> None:
        assert len(self._queue) <= self.capacity, len(self._queue)
        ids = [r.rollup_id for r in self._queue]
        assert len(set(ids)) == len(ids), ids
        assert self._in_flight <= set(ids), (self._in_flight, ids)
        for a, b in zip(self._queue, self._queue[1:], strict=False):
            assert a.seq_last < b.seq_first, (a.rollup_id, b.rollup_id)

    def statistics(self) -> BufferStatistics:
        return BufferStatistics(
            buffered=len(self._queue),
            in_flight=len(self._in_flight),
            merged_total=self._merged,
            acked_total=self._acked,
            requests_buffered=sum(r.requests for r in self._queue),
        )
