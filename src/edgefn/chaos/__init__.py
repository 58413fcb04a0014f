"""A Jepsen-style chaos suite for the replicated KV on a real local planet.

``plan`` (pure) turns a seed into the clients' operations and the nemesis' fault schedule;
``history`` (pure) records what clients saw and names the checks that judge it; ``driver`` carries
a plan out against a running planet. ``edgefn bench chaos`` and ``tests/chaos/`` run it.
"""

from __future__ import annotations

from edgefn.chaos.history import Op, checks, dump_history, load_history
from edgefn.chaos.plan import ChaosOptions, NemesisStep, PlannedOp, plan_clients, plan_nemesis

__all__ = [
    "ChaosOptions",
    "NemesisStep",
    "Op",
    "PlannedOp",
    "checks",
    "dump_history",
    "load_history",
    "plan_clients",
    "plan_nemesis",
]
