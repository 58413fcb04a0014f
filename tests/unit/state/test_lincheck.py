"""The linearizability checker accepts linearizable histories and rejects the others."""

from __future__ import annotations

import random

from edgefn.state.lincheck import LinOp, _check_key, check_linearizable


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


def test_an_unknown_write_that_a_read_saw_must_precede_that_read() -> None:
    """The write's value was read, so it applied before the read returned, not just 'later'."""
    history = [
        op(1, "put", 0, None, "unknown", value=b"u"),
        op(2, "get", 10, 20, value=b"u", revision=4),
        op(3, "put", 30, 40, value=b"b", revision=5),
        op(4, "get", 50, 60, value=b"b", revision=5),
    ]
    assert check_linearizable(history).ok
    reread = [*history, op(5, "get", 70, 80, value=b"u", revision=4)]
    assert not check_linearizable(reread).ok


def test_failed_operations_did_nothing() -> None:
    history = [
        op(1, "put", 0, 10, "fail", value=b"ghost"),
        op(2, "get", 20, 30, value=None, revision=0),
    ]
    assert check_linearizable(history).ok
    seen = [*history, op(3, "get", 40, 50, value=b"ghost", revision=1)]
    assert not check_linearizable(seen).ok


def _random_history(rng: random.Random, n: int) -> list[LinOp]:
    ops = []
    for i in range(n):
        kind = rng.choice(["get", "put", "put"])
        t0 = rng.randint(0, 40)
        outcome = rng.choice(["ok", "ok", "unknown", "conflict"] if kind == "put" else ["ok"])
        value = rng.choice([b"a", b"b", b"c", None]) if kind == "get" else f"v{i}".encode()
        if kind == "put" and rng.random() < 0.2:
            value = b"a"  # a value written twice: the 'read' rule must not apply to it
        ops.append(
            LinOp(
                i,
                f"c{i}",
                kind,
                "k",
                t0,
                None if outcome == "unknown" else t0 + rng.randint(0, 15),
                outcome,
                value,
                rng.choice([0, 1, 2, 3]) if value is not None or kind == "put" else 0,
                rng.choice([None, 0, 1, 2, 3]) if kind == "put" else None,
            )
        )
    return ops


def test_simplifying_around_unknown_writes_never_changes_the_verdict() -> None:
    """The search with the read/unobservable rules agrees with the plain search."""
    rng = random.Random(2024)
    verdicts = set()
    for _ in range(1500):
        history = _random_history(rng, rng.randint(2, 9))
        plain = _check_key("k", history, 10**6, simplify=False).ok
        assert _check_key("k", history, 10**6, simplify=True).ok == plain, history
        verdicts.add(plain)
    assert verdicts == {True, False}, "the generator must produce both kinds"


def test_many_unknown_blind_writes_stay_cheap() -> None:
    """An unread unknown write is dropped, so 40 of them do not explode the search."""
    history = [op(1, "put", 0, 1, value=b"a", revision=1)]
    history += [op(i, "put", 2, None, "unknown", value=f"u{i}".encode()) for i in range(2, 42)]
    history += [op(50, "get", 3, 4, value=b"a", revision=1)]
    result = check_linearizable(history)
    assert result.ok
    assert result.explored < 100
