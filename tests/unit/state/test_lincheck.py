"""The linearizability checker accepts linearizable histories and rejects the others."""

from __future__ import annotations

from edgefn.state.lincheck import LinOp, check_linearizable


def op(i: int, kind: str, t0: int, t1: int | None, outcome: str = "ok", **kw: object) -> LinOp:
    return LinOp(i, f"c{i}", kind, str(kw.pop("key", "k")), t0, t1, outcome, **kw)  # type: ignore[arg-type]


def test_sequential_cas_history_is_linearizable() -> None:
    history = [
        op(1, "put", 0, 1, value=b"a", revision=1, if_revision=0),
        op(2, "get", 2, 3, value=b"a", revision=1),
        op(3, "put", 4, 5, "conflict", value=b"x", revision=1, if_revision=0),
        op(4, "put", 6, 7, value=b"b", revision=3, if_revision=1),
        op(5, "delete", 8, 9),
        op(6, "get", 10, 11, value=None, revision=0),
    ]
    assert check_linearizable(history).ok


def test_concurrent_operations_may_take_effect_in_either_order() -> None:
    history = [
        op(1, "put", 0, 10, value=b"a", revision=1),
        op(2, "put", 1, 9, value=b"b", revision=2),
        op(3, "get", 11, 12, value=b"b", revision=2),
        op(4, "get", 5, 6, value=None, revision=0),
    ]
    assert check_linearizable(history).ok


def test_stale_read_after_a_completed_write_is_rejected() -> None:
    history = [
        op(1, "put", 0, 1, value=b"a", revision=1),
        op(2, "put", 2, 3, value=b"b", revision=2),
        op(3, "get", 4, 5, value=b"a", revision=1),
    ]
    result = check_linearizable(history)
    assert not result.ok
    assert result.key == "k"
    assert "no linearization" in result.reason


def test_two_successful_cas_from_the_same_revision_are_rejected() -> None:
    """Lost update: both clients 'won' a compare-and-set on revision 1."""
    history = [
        op(1, "put", 0, 1, value=b"1", revision=1, if_revision=0),
        op(2, "put", 2, 5, value=b"2", revision=2, if_revision=1),
        op(3, "put", 3, 6, value=b"2", revision=3, if_revision=1),
    ]
    assert not check_linearizable(history).ok


def test_revisions_must_grow() -> None:
    history = [
        op(1, "put", 0, 1, value=b"a", revision=5),
        op(2, "put", 2, 3, value=b"b", revision=4),
    ]
    assert not check_linearizable(history).ok


def test_indeterminate_write_may_or_may_not_have_happened() -> None:
    took_effect = [
        op(1, "put", 0, None, "unknown", value=b"a"),
        op(2, "get", 5, 6, value=b"a", revision=7),
    ]
    assert check_linearizable(took_effect).ok
    did_not = [
        op(1, "put", 0, None, "unknown", value=b"a"),
        op(2, "get", 5, 6, value=None, revision=0),
    ]
    assert check_linearizable(did_not).ok
    # But a read cannot see a value nobody wrote.
    bogus = [*did_not, op(3, "get", 7, 8, value=b"zzz", revision=9)]
    assert not check_linearizable(bogus).ok


def test_keys_are_checked_independently() -> None:
    history = [
        op(1, "put", 0, 1, key="x", value=b"a", revision=1),
        op(2, "put", 0, 1, key="y", value=b"b", revision=2),
        op(3, "get", 2, 3, key="y", value=b"b", revision=2),
        op(4, "get", 2, 3, key="x", value=None, revision=0),
    ]
    result = check_linearizable(history)
    assert not result.ok
    assert result.key == "x"


def test_conflict_must_report_the_current_revision() -> None:
    history = [
        op(1, "put", 0, 1, value=b"a", revision=1),
        op(2, "put", 2, 3, "conflict", value=b"b", revision=9, if_revision=0),
    ]
    assert not check_linearizable(history).ok
