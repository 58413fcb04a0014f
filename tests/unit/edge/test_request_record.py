"""What an answered request counts toward its version's deploy-gate figures."""

from __future__ import annotations

import io
import time

from edgefn.edge.request_record import RequestRecorder
from edgefn.observe import JsonLog
from edgefn.observe.version_stats import VersionStatsTracker
from edgefn.runtime.sandbox import STORE_FAULT_KINDS


def _recorder() -> tuple[RequestRecorder, VersionStatsTracker, io.StringIO]:
    stats, out = VersionStatsTracker(), io.StringIO()
    recorder = RequestRecorder(
        log=JsonLog(out),
        version_stats=stats,
        requests={},
        access_log=True,
        telemetry=None,
        tail=None,
    )
    return recorder, stats, out


def test_a_store_fault_is_logged_but_not_held_against_the_version() -> None:
    recorder, stats, out = _recorder()
    scope = {"method": "POST", "path": "/incr", "headers": []}
    t0 = time.perf_counter()
    recorder.answered("r1", scope, "counter", "v2", 200, t0, False)
    recorder.answered("r2", scope, "counter", "v2", 500, t0, False)
    # The KV home's leader died: the store failed these, whichever version asked.
    recorder.answered("r3", scope, "counter", "v2", 503, t0, False, store_fault=True)
    recorder.answered("r4", scope, "counter", "v2", 503, t0, False, store_fault=True)
    requests, errors, _, _ = stats.snapshot()["counter"]["v2"]
    assert (requests, errors) == (2, 1)
    assert out.getvalue().count('"kind":"access"') == 4  # every answer is still logged


def test_only_the_stores_failures_are_store_faults() -> None:
    assert {"consistency_unavailable", "outcome_unknown"} == STORE_FAULT_KINDS
