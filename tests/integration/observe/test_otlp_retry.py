"""OTLP export through a collector outage: nothing lost within the queue's bound, and a batch the
collector refuses is given up after MAX_ATTEMPTS so the rest still flow. Real HTTP on
127.0.0.1 (the conftest's protobuf receiver); no planet needed."""

from __future__ import annotations

import asyncio
import time

from edgefn.control.otlp_export import MAX_ATTEMPTS, OtlpExport
from edgefn.observe.spans import SpanRecord
from tests.integration.observe.conftest import OtlpReceiver
from tests.planet_helpers import free_port
from tests.waiting import until


def _spans(n: int, seed: int) -> list[SpanRecord]:
    now = time.time_ns()
    return [
        SpanRecord(
            f"{seed:016x}{i:016x}",
            f"{seed:08x}{i:08x}",
            "",
            False,
            "edgefn.request",
            1,
            now,
            now + 1_000_000,
            1,
            "fra",
            "hello",
            1.0,
            "sampled",
        )
        for i in range(n)
    ]


def test_spans_queued_while_the_collector_is_down_arrive_after_it_is_up() -> None:
    port = free_port()
    spans = _spans(700, 1)  # two batches

    async def run() -> None:
        export = OtlpExport(f"http://127.0.0.1:{port}/v1/traces", interval_s=0.05,
                            timeout_s=0.3, backoff_max_s=1.0)  # fmt: skip
        export.offer(spans)
        await export.start()
        try:
            await until(
                lambda: export.statistics().failed_total >= 1000,
                timeout_s=20,
                what="failed attempts",
            )
            st = export.statistics()
            assert (st.queued, st.exported_total, st.abandoned_total) == (700, 0, 0), st
            assert export.retry_delay_s() > 0.05  # backing off
            with OtlpReceiver(port=port) as receiver:
                await until(lambda: len(receiver.spans) == 700, timeout_s=20, what="spans received")
                await until(
                    lambda: export.statistics().exported_total == 700, timeout_s=5, what="exported"
                )
            assert {s.span_id for s in spans} == set(receiver.spans)
            st = export.statistics()
            assert (st.queued, st.dropped_total, st.abandoned_total) == (0, 0, 0), st
            assert export.retry_delay_s() == 0.05  # back to the interval
        finally:
            await export.stop()

    asyncio.run(run())


def test_a_batch_the_collector_refuses_is_abandoned_after_max_attempts() -> None:
    async def run() -> None:
        with OtlpReceiver(status=400) as refusing:
            export = OtlpExport(refusing.url, interval_s=0.02, timeout_s=0.5, backoff_max_s=0.05)
            export.offer(_spans(10, 2))
            await export.start()
            try:
                await until(
                    lambda: export.statistics().abandoned_total == 10,
                    timeout_s=20,
                    what="abandoned",
                )
                assert refusing.requests == MAX_ATTEMPTS
                st = export.statistics()
                assert (st.queued, st.exported_total, st.failed_total) == (0, 0, 10 * MAX_ATTEMPTS)
            finally:
                await export.stop()

    asyncio.run(run())
