"""The per-function log budget (pure) and the rotating log file."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edgefn.observe import LogLimiter, LogLimits, RotatingFile


def test_a_burst_is_kept_then_lines_are_dropped_and_counted() -> None:
    lim = LogLimiter(LogLimits(lines_per_s=10, lines_burst=5, report_ms=1000))
    kept = [lim.admit("f", 10, now_ms=0) for _ in range(8)]
    assert kept == [True] * 5 + [False] * 3
    assert lim.take_dropped("f", now_ms=0) == 0  # not a whole report window yet
    assert lim.take_dropped("f", now_ms=1000) == 3
    assert lim.take_dropped("f", now_ms=2000) == 0


def test_the_budget_refills_at_the_steady_rate() -> None:
    lim = LogLimiter(LogLimits(lines_per_s=10, lines_burst=5))
    for _ in range(5):
        assert lim.admit("f", 1, now_ms=0)
    assert not lim.admit("f", 1, now_ms=50)  # half a line refilled
    assert lim.admit("f", 1, now_ms=150)


def test_bytes_are_budgeted_too() -> None:
    lim = LogLimiter(LogLimits(bytes_per_s=100, bytes_burst=1000))
    assert lim.admit("f", 900, now_ms=0)
    assert not lim.admit("f", 200, now_ms=0)


def test_functions_have_separate_budgets() -> None:
    lim = LogLimiter(LogLimits(lines_burst=1))
    assert lim.admit("noisy", 1, now_ms=0)
    assert not lim.admit("noisy", 1, now_ms=0)
    assert lim.admit("quiet", 1, now_ms=0)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 5_000)), max_size=200))
def test_never_more_than_burst_plus_rate_times_time(events: list[tuple[int, int]]) -> None:
    limits = LogLimits(lines_per_s=20, lines_burst=10)
    lim = LogLimiter(limits)
    now, kept = 0, 0
    for step_ms, size in events:
        now += step_ms
        kept += lim.admit("f", size, now)
    assert kept <= limits.lines_burst + limits.lines_per_s * now / 1000 + 1e-9


def test_the_number_of_tracked_functions_is_bounded() -> None:
    lim = LogLimiter(max_functions=3)
    for i in range(10):
        lim.admit(f"f{i}", 1, now_ms=0)
    assert len(lim._buckets) == 3


def test_the_file_rotates_and_keeps_a_bounded_number_of_backups(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    out = RotatingFile(path, max_bytes=100, backups=2)
    for i in range(50):
        out.write(f"line {i:03d} ........\n")
    out.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    assert "line 049" in path.read_text()
