"""The reconciler's part in secrets: a secrets generation rolls out like a deploy of the same code."""

from __future__ import annotations

import msgspec
from _control_harness import Node, World, ref

from edgefn.control import (
    DeploymentCompleted,
    DeployRequested,
    NodeObserved,
    Reconciler,
    RollbackRequested,
    WriteDesired,
)

FN = "hello"


def _world() -> World:
    w = World(Reconciler(), [Node("ams", "eu"), Node("iad", "us")])
    w.register_all()
    return w


def _deploy_and_converge(w: World, version: object) -> None:
    before = sum(isinstance(i, DeploymentCompleted) for i in w.log)
    w.feed(DeployRequested(FN, version, "immediate", w.now_ms))  # type: ignore[arg-type]
    w.run_until(lambda: sum(isinstance(i, DeploymentCompleted) for i in w.log) > before)


def _secrets_generation(w: World) -> set[int]:
    return {
        n.applied.functions[FN].secrets_generation
        for n in w.nodes.values()
        if n.applied is not None
    }


def test_new_secrets_generation_of_active_code_rolls_out_and_keeps_previous_code() -> None:
    """v1, v2 deployed; v2 with secrets generation 1 is accepted, reaches every location with
    the generation in its desired state, and "previous" stays v1 so a rollback changes code."""
    w = _world()
    _deploy_and_converge(w, ref(1))
    _deploy_and_converge(w, ref(2))
    assert _secrets_generation(w) == {0}
    _deploy_and_converge(w, msgspec.structs.replace(ref(2), secrets_generation=1))
    assert _secrets_generation(w) == {1}
    status = w.r.function_status(FN)
    assert status is not None
    assert status.active == msgspec.structs.replace(ref(2), secrets_generation=1)
    assert status.previous == ref(1)
    assert status.converged
    w.feed(RollbackRequested(FN, None, w.now_ms))
    assert w.r.function_status(FN).active == ref(1)  # type: ignore[union-attr]


def test_a_new_node_secrets_key_rewrites_that_location_only() -> None:
    """A node whose secrets key changed (state wiped) gets its desired state again, to be resealed."""
    w = _world()
    _deploy_and_converge(w, ref(1))
    node = w.nodes["ams"]
    obs = msgspec.structs.replace(node.observed(w.now_ms), secrets_key="bmV3LWtleQ==")
    out = w.feed(NodeObserved(obs, w.now_ms))
    assert [i.location for i in out if isinstance(i, WriteDesired)] == ["ams"]
    # The same key again changes nothing.
    assert not [i for i in w.feed(NodeObserved(obs, w.now_ms)) if isinstance(i, WriteDesired)]
