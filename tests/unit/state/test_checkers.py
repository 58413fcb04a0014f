"""Session, causal, convergence and lost-write checkers, on hand-written histories."""

from __future__ import annotations

from edgefn.state.checkers import (
    HistOp,
    check_causal,
    check_convergence,
    check_no_lost_writes,
    check_sessions,
)
from edgefn.state.events import Item


def w(s: str, i: int, key: str, hlc: int, origin: str = "a", *, causal: bool = False) -> HistOp:
    return HistOp(s, i, "put", key, True, (hlc, origin), f"{s}{i}".encode(), causal=causal)


def r(
    s: str, i: int, key: str, stamp: tuple[int, str] | None, value: bytes | None = b"x"
) -> HistOp:
    return HistOp(s, i, "get", key, True, stamp, value)


def test_read_your_writes_and_monotonic_reads_pass_when_respected() -> None:
    history = [
        w("s", 1, "k", 10),
        r("s", 2, "k", (10, "a")),
        r("s", 3, "k", (12, "b")),
        r("s", 4, "k", (12, "b")),
        w("s", 5, "k", 13),
    ]
    assert check_sessions(history) == []


def test_read_your_writes_violation_is_reported() -> None:
    history = [w("s", 1, "k", 10), r("s", 2, "k", (9, "b"))]
    (problem,) = check_sessions(history)
    assert "session s" in problem
    assert "op #2" in problem


def test_monotonic_reads_violation_is_reported() -> None:
    history = [r("s", 1, "k", (12, "b")), r("s", 2, "k", (11, "a"))]
    assert len(check_sessions(history)) == 1
    missing = [r("s", 1, "k", (12, "b")), r("s", 2, "k", None, None)]
    assert len(check_sessions(missing)) == 1


def test_reading_nothing_after_a_delete_is_allowed() -> None:
    delete = HistOp("s", 1, "delete", "k", True, (10, "a"), None)
    assert check_sessions([delete, r("s", 2, "k", None, None)]) == []


def test_monotonic_writes_violation_is_reported() -> None:
    history = [r("s", 1, "k", (20, "b")), w("s", 2, "k", 15)]
    assert len(check_sessions(history)) == 1


def test_failed_operations_are_ignored() -> None:
    failed = HistOp("s", 2, "get", "k", False)
    assert check_sessions([w("s", 1, "k", 10), failed]) == []


def test_causal_checker_follows_reads_transitively() -> None:
    """p writes x then y (causal); q reads y, then must not see an x older than p's write."""
    p = [w("p", 1, "x", 10, "a", causal=True), w("p", 2, "y", 11, "a", causal=True)]
    good = [*p, r("q", 1, "y", (11, "a")), r("q", 2, "x", (10, "a"))]
    assert check_causal(good) == []
    bad = [*p, r("q", 1, "y", (11, "a")), r("q", 2, "x", None, None)]
    (problem,) = check_causal(bad)
    assert "session q" in problem
    # The session checker alone does not see this: q never touched x itself.
    assert check_sessions(bad) == []


def test_convergence() -> None:
    same = {"a": {"k": Item("k", b"v", 1)}, "b": {"k": Item("k", b"v", 1)}}
    assert check_convergence(same) == []
    differ = {"a": {"k": Item("k", b"v", 1)}, "b": {}}
    (problem,) = check_convergence(differ)
    assert "'k'" in problem
    assert check_convergence({}) == []


def test_no_lost_writes() -> None:
    history = [w("s", 1, "k", 10), w("t", 1, "k", 12, "b")]
    final_ok = {"k": Item("k", b"t1", 2, stamp=(12, "b"))}
    assert check_no_lost_writes(history, final_ok) == []
    final_old = {"k": Item("k", b"s1", 2, stamp=(10, "a"))}
    assert len(check_no_lost_writes(history, final_old)) == 1
    assert len(check_no_lost_writes(history, {})) == 1
    wrong_value = {"k": Item("k", b"zzz", 2, stamp=(12, "b"))}
    assert len(check_no_lost_writes(history, wrong_value)) == 1
    deleted = [*history, HistOp("u", 1, "delete", "k", True, (13, "c"), None)]
    assert check_no_lost_writes(deleted, {}) == []


def test_reading_nothing_is_allowed_after_someone_elses_newer_delete() -> None:
    """The other session's delete's tombstone may have been collected since."""
    history = [w("s", 1, "k", 10), r("s", 2, "k", None, None)]
    assert len(check_sessions(history)) == 1
    other = HistOp("t", 1, "delete", "k", True, (11, "b"), None)
    assert check_sessions([*history, other]) == []
    older = HistOp("t", 1, "delete", "k", True, (9, "b"), None)
    assert len(check_sessions([*history, older])) == 1
