"""The side-by-side throughput runs of ``edgefn bench runtime``: which round a server keeps."""

from __future__ import annotations

from edgefn.bench import _warm


def test_each_server_keeps_its_median_round() -> None:
    rounds = [{"rps": 3.0, "k": "a"}, {"rps": 1.0, "k": "b"}, {"rps": 2.0, "k": "c"}]
    assert _warm._median_round(rounds) == {"rps": 2.0, "k": "c", "rounds_rps": [3.0, 1.0, 2.0]}
    assert _warm._median_round([{"rps": 1.0}, {"rps": 2.0}])["rps"] == 2.0  # the upper median


def test_a_skipped_server_stays_skipped() -> None:
    assert _warm._median_round(["skipped: x", "skipped: x"]) == "skipped: x"
