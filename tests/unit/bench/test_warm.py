"""The side-by-side throughput runs of ``edgefn bench runtime``: which round a server keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefn.bench import _warm
from edgefn.bench._wrk import LoadGenerator


def test_each_server_keeps_its_median_round() -> None:
    rounds = [{"rps": 3.0, "k": "a"}, {"rps": 1.0, "k": "b"}, {"rps": 2.0, "k": "c"}]
    assert _warm._median_round(rounds) == {"rps": 2.0, "k": "c", "rounds_rps": [3.0, 1.0, 2.0]}
    assert _warm._median_round([{"rps": 1.0}, {"rps": 2.0}])["rps"] == 2.0  # the upper median


def test_a_skipped_server_stays_skipped() -> None:
    assert _warm._median_round(["skipped: x", "skipped: x"]) == "skipped: x"


def test_a_workerd_that_exits_before_listening_is_skipped_with_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken workerd (here a script that exits at once) is reported, not measured: wrk is
    never run against a port nobody listens on."""
    exe = tmp_path / "workerd"
    exe.write_text("#!/bin/sh\nexit 3\n")
    exe.chmod(0o755)
    monkeypatch.setenv("EDGEFN_WORKERD", str(exe))
    gen = LoadGenerator("wrk", exe=str(tmp_path / "no-wrk"))
    out = _warm.workerd(gen, tmp_path, concurrency=1, duration_s=1.0)
    assert out == "workerd exited with code 3 before listening; skipped"
