"""The chaos checkers on hand-made histories: each guarantee has a history that must fail.

Histories are written as the driver records them (:class:`edgefn.chaos.history.Op`: client-side
invoke/return times, outcomes ok/conflict/fail/unknown), so these tests also pin down how the
driver's records are read: a ``fail`` did nothing, an ``unknown`` write may take effect at any
time after its invocation (its return time is infinite) or never.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from edgefn.chaos.driver import ChaosRun, Verdict, evaluate, save_failure
from edgefn.chaos.history import Op, checks, dump_history, load_history
from edgefn.chaos.plan import ChaosOptions
from edgefn.state.events import Item

_ids = itertools.count(1)


def strong(client: str, kind: str, t0: int, t1: int, outcome: str = "ok", **kw: object) -> Op:
    key = str(kw.pop("key", "k"))
    return Op(next(_ids), client, 0, "strong", kind, key, "nrt", t0, t1, outcome, **kw)  # type: ignore[arg-type]


def weak(
    client: str,
    seq: int,
    kind: str,
    key: str,
    value: str | None,
    stamp: tuple[int, str] | None,
    *,
    level: str = "session",
    outcome: str = "ok",
    location: str = "nrt",
) -> Op:
    return Op(
        next(_ids),
        client,
        seq,
        level,
        kind,
        key,
        location,
        seq,
        seq + 1,
        outcome,
        value,
        stamp=stamp,
    )


def settled(history: list[Op]) -> dict[str, dict[str, Item]]:
    """Two replicas holding the newest acknowledged eventual/session write of every key."""
    newest: dict[str, Item] = {}
    for op in history:
        if op.level != "strong" and op.kind == "put" and op.outcome == "ok":
            assert op.stamp is not None
            assert op.value is not None
            if op.key not in newest or op.stamp > (newest[op.key].stamp or (0, "")):
                newest[op.key] = item(op.key, op.value, op.stamp)
    return {"fra": dict(newest), "nrt": dict(newest)}


def verdicts(
    history: list[Op], final: dict[str, dict[str, Item]] | None = None
) -> dict[str, list[str]]:
    final = settled(history) if final is None else final
    return {name: check() for name, check in checks(history, final)}


def failing(history: list[Op], final: dict[str, dict[str, Item]] | None = None) -> set[str]:
    return {name for name, problems in verdicts(history, final).items() if problems}


def item(key: str, value: str, stamp: tuple[int, str]) -> Item:
    return Item(key, value.encode(), 1, stamp=stamp)


# --------------------------------------------------------------------------- strong


def test_a_clean_strong_history_passes() -> None:
    history = [
        strong("a", "cas", 0, 10, value="a1", if_revision=0, revision=5),
        strong("b", "cas", 2, 12, "conflict", value="b1", if_revision=0, revision=5),
        strong("b", "get", 13, 20, value="a1", revision=5),
        strong("a", "put", 21, 30, value="a2", revision=9),
        strong("b", "get", 31, 40, value="a2", revision=9),
    ]
    assert failing(history) == set()


def test_a_stale_strong_read_is_not_linearizable() -> None:
    history = [
        strong("a", "put", 0, 10, value="a1", revision=5),
        strong("a", "put", 11, 20, value="a2", revision=6),
        strong("b", "get", 21, 30, value="a1", revision=5),
    ]
    (problem,) = verdicts(history)["linearizable"]
    assert "no linearization" in problem


def test_two_cas_that_both_won_from_one_revision_are_not_linearizable() -> None:
    history = [
        strong("a", "cas", 0, 10, value="a1", if_revision=0, revision=5),
        strong("b", "cas", 0, 12, value="b1", if_revision=0, revision=6),
    ]
    assert failing(history) == {"linearizable"}


def test_a_failed_write_did_nothing_so_reading_its_value_is_a_violation() -> None:
    """503 consistency_unavailable promises nothing was done: its value must never appear."""
    history = [
        strong("a", "put", 0, 10, "fail", value="ghost", error="consistency_unavailable"),
        strong("b", "get", 20, 30, value="ghost", revision=3),
    ]
    assert failing(history) == {"linearizable"}


def test_an_unknown_write_may_take_effect_long_after_the_client_gave_up() -> None:
    """Return time infinity: the write lands after operations that began after the client's
    timeout, as a request still queued at the home would."""
    history = [
        strong("a", "put", 0, 50, "unknown", value="late", error="ReadTimeout"),
        strong("b", "put", 60, 70, value="b1", revision=4),
        strong("b", "get", 80, 90, value="b1", revision=4),
        strong("c", "get", 100, 110, value="late", revision=7),
    ]
    assert failing(history) == set()
    # Had the client's give-up time been taken as its return, this would not linearize.
    as_if_returned = [
        strong("a", "put", 0, 50, value="late", revision=7),
        *history[1:],
    ]
    assert failing(as_if_returned) == {"linearizable"}


def test_an_unknown_write_may_also_never_take_effect() -> None:
    history = [
        strong("a", "cas", 0, 50, "unknown", value="maybe", if_revision=0),
        strong("b", "get", 60, 70, value=None, revision=0),
        strong("b", "cas", 71, 80, value="b1", if_revision=0, revision=3),
    ]
    assert failing(history) == set()


def test_an_unknown_write_cannot_take_effect_before_it_was_invoked() -> None:
    history = [
        strong("b", "get", 0, 10, value="early", revision=2),
        strong("a", "put", 20, 30, "unknown", value="early"),
    ]
    assert failing(history) == {"linearizable"}


# --------------------------------------------------------------------------- sessions


def test_sessions_that_read_their_writes_and_never_go_back_pass() -> None:
    history = [
        weak("s1", 1, "put", "x", "s1:1", (10, "nrt")),
        weak("s1", 2, "get", "x", "s1:1", (10, "nrt"), location="fra"),
        weak("s2", 1, "put", "x", "s2:1", (12, "fra"), location="fra"),
        weak("s1", 3, "get", "x", "s2:1", (12, "fra")),
        weak("s1", 4, "get", "x", None, None, outcome="fail", location="gru"),
        weak("s1", 5, "get", "x", "s2:1", (12, "fra"), location="gru"),
    ]
    assert failing(history) == set()


def test_a_session_that_misses_its_own_write_at_another_location_fails() -> None:
    history = [
        weak("s1", 1, "put", "x", "s1:1", (10, "nrt")),
        weak("s2", 1, "put", "x", "s2:0", (5, "fra"), location="fra"),
        weak("s1", 2, "get", "x", "s2:0", (5, "fra"), location="fra"),
    ]
    assert failing(history) == {"sessions"}


def test_a_session_whose_reads_go_back_in_time_fails() -> None:
    """Monotonic reads: after seeing s2's newer write, s1 must not read the older one."""
    history = [
        weak("s2", 1, "put", "x", "s2:1", (10, "fra"), location="fra"),
        weak("s2", 2, "put", "x", "s2:2", (20, "fra"), location="fra"),
        weak("s1", 1, "get", "x", "s2:2", (20, "fra"), location="fra"),
        weak("s1", 2, "get", "x", "s2:1", (10, "fra"), location="nrt"),
    ]
    (problem,) = verdicts(history)["sessions"]
    assert "session s1: op #2" in problem


def test_eventual_clients_are_not_held_to_session_guarantees() -> None:
    history = [
        weak("e1", 1, "put", "y", "e1:1", (10, "nrt"), level="eventual"),
        weak("e1", 2, "get", "y", None, None, level="eventual", location="fra"),
    ]
    assert "sessions" not in failing(history)


# --------------------------------------------------------------------------- eventual


def test_reads_of_values_nobody_wrote_fail_but_reads_of_unknown_writes_pass() -> None:
    unknown = weak("e1", 1, "put", "y", "e1:1", None, level="eventual", outcome="unknown")
    seen = weak("e2", 1, "get", "y", "e1:1", (33, "nrt"), level="eventual")
    assert failing([unknown, seen]) == set()
    phantom = weak("e2", 2, "get", "y", "e9:9", (34, "nrt"), level="eventual")
    assert failing([unknown, seen, phantom]) == {"reads_observed_writes"}
    torn = weak("e3", 1, "get", "y", "e1:1-torn", (33, "nrt"), level="eventual")
    assert failing([unknown, seen, torn]) == {"reads_observed_writes"}


def test_an_acknowledged_eventual_write_that_vanished_is_lost() -> None:
    history = [
        weak("e1", 1, "put", "y", "e1:1", (10, "nrt"), level="eventual"),
        weak("e2", 1, "put", "y", "e2:1", (20, "fra"), level="eventual", location="fra"),
    ]
    good = {loc: {"y": item("y", "e2:1", (20, "fra"))} for loc in ("fra", "nrt")}
    assert failing(history, good) == set()
    lost = {loc: {"y": item("y", "e1:1", (10, "nrt"))} for loc in ("fra", "nrt")}
    assert failing(history, lost) == {"no_lost_writes"}
    absent: dict[str, dict[str, Item]] = {"fra": {}, "nrt": {}}
    assert failing(history, absent) == {"no_lost_writes"}


def test_replicas_that_differ_after_the_heal_do_not_converge() -> None:
    history = [weak("e1", 1, "put", "y", "e1:1", (10, "nrt"), level="eventual")]
    final = {
        "fra": {"y": item("y", "e1:1", (10, "nrt"))},
        "nrt": {"y": item("y", "e1:1", (10, "nrt")), "z": item("z", "old", (1, "nrt"))},
    }
    assert failing(history, final) == {"convergence"}


# --------------------------------------------------------------------------- records


def test_history_round_trips_through_json_lines() -> None:
    history = [
        weak("s1", 1, "put", "x", "s1:1", (10, "nrt")),
        strong("a", "cas", 0, 10, "conflict", value="a1", if_revision=0, revision=5),
    ]
    text = '{"header": {"seed": 1}}\n' + dump_history(history)
    assert sorted(load_history(text), key=lambda o: o.op_id) == sorted(
        history, key=lambda o: o.op_id
    )


def test_a_failing_run_saves_its_seed_and_history(tmp_path: Path) -> None:
    history = [
        strong("a", "put", 0, 10, value="a1", revision=5),
        strong("b", "get", 20, 30, value=None, revision=0),
    ]
    run = ChaosRun(ChaosOptions(seed=4242, duration_ms=1000), ["nrt"], history, converged=True)
    found = evaluate(run)
    assert [v.name for v in found if not v.ok] == ["linearizable"]
    path = save_failure(run, found, tmp_path)
    assert "seed4242" in path.name
    text = path.read_text()
    assert '"seed": 4242' in text.splitlines()[0]
    assert "--seed 4242" in text.splitlines()[0]
    assert load_history(text) == history


def test_a_run_that_did_not_converge_in_time_fails() -> None:
    run = ChaosRun(ChaosOptions(seed=1, duration_ms=1000), ["nrt"], [], converged=False)
    assert evaluate(run)[-1] == Verdict("converged_in_time", False, ("digests still differ",), 0.0)


@pytest.mark.parametrize("outcome", ["bogus", "info"])
def test_outcomes_are_one_of_four(outcome: str) -> None:
    with pytest.raises(AssertionError):
        strong("a", "get", 0, 1, outcome)
