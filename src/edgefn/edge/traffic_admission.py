"""Admission queueing at one node: carry out the pure controller's admit / queue / reject.

:class:`AdmissionQueue` owns the node's :class:`~edgefn.routing.admission.AdmissionController`
and the asyncio side of its queue. :meth:`AdmissionQueue.admit` numbers the request and asks the
controller: ``Admit`` or ``Reject`` come back at once; ``Queue`` parks the request on a future
until a later instruction (a completion freed a slot, or the wait ran out) resolves it. The
controller decides everything — the limit, the queue bound, the wait, ``Retry-After``; this
module only keeps one future per waiting request (at most ``max_queue``, plus the one being
decided).

Two races are closed here. A waiter cancelled while queued (the client left) tells the
controller ``Cancelled`` so its place is freed. An ``Admit`` for a waiter that is already gone
gives the slot back at once instead of leaking it. :meth:`AdmissionQueue.expire` (called every
driver tick) lets the controller reject requests whose wait ran out, so a queue deadline holds
to within one ``tick_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from edgefn.edge._clock import mono_ms
from edgefn.routing import (
    AdmissionConfig,
    AdmissionController,
    AdmissionInstruction,
    AdmissionStatistics,
    AdmissionTick,
    Admit,
    Arrived,
    Cancelled,
    CapacityChanged,
    Completed,
    LoadReport,
    Reject,
)

__all__ = ["AdmissionQueue"]


class AdmissionQueue:
    """Admit now, later (bounded wait) or never: one node's admission, with its waiters."""

    def __init__(self, config: AdmissionConfig) -> None:
        self.controller = AdmissionController(config)
        self._waiting: dict[int, asyncio.Future[Admit | Reject]] = {}
        self._ids = itertools.count(1)
        self._queued = asyncio.Event()  # set when a request starts waiting

    @property
    def waiting(self) -> int:
        """Requests waiting in the queue now."""
        return len(self._waiting)

    async def until_queued(self, timeout_s: float) -> None:
        """Return when a request starts waiting, or after ``timeout_s``: the driver's tick needs
        to expire waiters only while there are some."""
        self._queued.clear()
        if self._waiting:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queued.wait(), timeout_s)

    async def admit(self) -> tuple[int, Admit | Reject]:
        """A new admission id and its verdict, waiting in the queue if the controller says so."""
        admission_id = next(self._ids)
        verdict = self.controller.handle(Arrived(admission_id, mono_ms()))[0]
        if not isinstance(verdict, Admit | Reject):
            verdict = await self._wait(admission_id)
        return admission_id, verdict

    async def _wait(self, admission_id: int) -> Admit | Reject:
        future: asyncio.Future[Admit | Reject] = asyncio.get_running_loop().create_future()
        self._waiting[admission_id] = future
        self._queued.set()
        try:
            return await future
        except asyncio.CancelledError:
            self._waiting.pop(admission_id, None)
            self._resolve(self.controller.handle(Cancelled(admission_id, mono_ms())))
            raise

    def complete(self, admission_id: int, *, latency_ms: float, ok: bool) -> None:
        """An admitted request finished: free its slot (which may admit queued ones)."""
        self._resolve(self.controller.handle(Completed(admission_id, latency_ms, ok, mono_ms())))

    def expire(self) -> None:
        """Reject queued requests whose wait ran out."""
        self._resolve(self.controller.handle(AdmissionTick(mono_ms())))

    def _resolve(self, instructions: list[AdmissionInstruction]) -> None:
        for ins in instructions:
            future = self._waiting.pop(ins.req_id, None)
            if future is not None and not future.done():
                assert isinstance(ins, Admit | Reject), ins
                future.set_result(ins)
            elif isinstance(ins, Admit):
                # Its waiter is gone (client left): give the slot back at once.
                self._resolve(self.controller.handle(Cancelled(ins.req_id, mono_ms())))

    def set_capacity(self, factor: float) -> None:
        """Scale the concurrency limit (a thermally throttled location); a rise admits waiters."""
        self._resolve(self.controller.handle(CapacityChanged(factor, mono_ms())))

    def load_report(
        self, location: str, *, now_ms: int, draining: bool = False, hot: bool = False
    ) -> LoadReport:
        return self.controller.load_report(location, now_ms=now_ms, draining=draining, hot=hot)

    @property
    def config(self) -> AdmissionConfig:
        return self.controller.config

    def check_invariants(self) -> None:
        self.controller.check_invariants()
        assert len(self._waiting) <= self.config.max_queue + 1, len(self._waiting)

    def statistics(self) -> AdmissionStatistics:
        return self.controller.statistics()
