"""Deterministic simulation of the KV replica under faults, judged by the checkers.

Each scenario runs many seeds; a failure names the seed and the command that replays it.
``EDGEFN_SIM_SEEDS`` sets the total seed count across scenarios (default 2000);
``EDGEFN_SIM_SEED`` runs one seed only.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from _kvsim import SimOptions, run_seed

from edgefn.state import Consistency, Delete, Get, Put, Replica
from edgefn.state.events import Event, Instruction

SCENARIOS: dict[str, SimOptions] = {
    "calm": SimOptions(),
    "lossy": SimOptions(drop=0.15, duplicate=0.15, delay_ms=(1, 120)),
    "partitions": SimOptions(partitions=3, drop=0.05),
    "crashes": SimOptions(crashes=3, duplicate=0.05),
    "chaos": SimOptions(
        replicas=4, clients=6, partitions=2, crashes=2, drop=0.1, duplicate=0.1, clock_skew_ms=80
    ),
}


def _seeds() -> list[int]:
    one = os.environ.get("EDGEFN_SIM_SEED")
    if one is not None:
        return [int(one)]
    total = int(os.environ.get("EDGEFN_SIM_SEEDS", "2000"))
    return list(range(max(1, total // len(SCENARIOS))))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_passes_every_checker(scenario: str) -> None:
    """Every seed: invariants hold after each step, and every checker passes after heal."""
    options = SCENARIOS[scenario]
    for seed in _seeds():
        _, problems = run_seed(options, seed)
        assert not problems, (
            f"seed {seed} failed in scenario {scenario}:\n  "
            + "\n  ".join(problems[:10])
            + f"\nreplay: EDGEFN_SIM_SEED={seed} pytest tests/sim -k {scenario}"
        )


def test_sqlite_backed_crashes_recover(tmp_path: object) -> None:
    """The same checks with every replica persisting to a real SQLite file and crashing."""
    for seed in range(3):
        directory = f"{tmp_path}/{seed}"
        os.makedirs(directory)
        options = dataclasses.replace(SCENARIOS["crashes"], sqlite_dir=directory)
        sim, problems = run_seed(options, seed)
        assert not problems, f"seed {seed}: {problems[:5]}"
        assert sim.steps > 0


def test_same_seed_same_run() -> None:
    """A seed replays exactly: same history, same final state."""
    options = SCENARIOS["chaos"]
    a, _ = run_seed(options, 7)
    b, _ = run_seed(options, 7)
    assert a.hist == b.hist
    assert a.lin == b.lin
    assert a.steps == b.steps


# --- the simulation must catch broken replicas ---------------------------------------------------


class _NoSessionWait(Replica):
    """Bug: session and causal operations run at once instead of waiting for the token."""

    def handle(self, event: Event) -> list[Instruction]:
        if isinstance(event, (Get, Put, Delete)) and event.consistency in (
            Consistency.SESSION,
            Consistency.CAUSAL,
        ):
            event = dataclasses.replace(event, consistency=Consistency.EVENTUAL)
        return super().handle(event)


class _EagerGC(Replica):
    """Bug: tombstones are collected as soon as they exist, before every replica saw them."""

    def _stable_hlc(self) -> int:
        return self.clock.last


def _first_failing_seed(replica_type: type[Replica], options: SimOptions) -> int | None:
    for seed in range(300):
        _, problems = run_seed(options, seed, replica_type=replica_type)
        if problems:
            return seed
    return None


def test_simulation_catches_reads_that_ignore_session_tokens() -> None:
    options = dataclasses.replace(
        SCENARIOS["lossy"], levels=(Consistency.SESSION,), move=0.7, delay_ms=(20, 200)
    )
    assert _first_failing_seed(_NoSessionWait, options) is not None


def test_simulation_catches_unsafe_tombstone_collection() -> None:
    options = dataclasses.replace(
        SCENARIOS["partitions"], levels=(Consistency.EVENTUAL,), partitions=4
    )
    assert _first_failing_seed(_EagerGC, options) is not None
