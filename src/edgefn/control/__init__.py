"""The control plane: registry, rollout reconciler, and desired/observed state on the bus.

This package re-exports the pure parts (wire model, reconciler, gates, registry), which the edge
node and the simulator import. The I/O drivers live in ``edgefn.control.service`` (the reconciler
loop over JetStream) and ``edgefn.control.api`` (the HTTP API); import them explicitly, so that
importing the model does not pull in starlette and nats.
"""

from __future__ import annotations

from edgefn.control.errors import Conflict, ControlError, NotFound, Untrusted
from edgefn.control.events import (
    STRATEGIES,
    DeploymentCompleted,
    DeploymentRecord,
    DeploymentStarted,
    DeployRequested,
    Event,
    FunctionRestored,
    FunctionStatus,
    Instruction,
    LocationForgotten,
    LocationStatus,
    NodeObserved,
    PlacementChosen,
    Rejected,
    RollbackRequested,
    RolledBack,
    StageAdvanced,
    Tick,
    WriteDesired,
)
from edgefn.control.gates import GateOutcome, GateResult, GateThresholds, aggregate, evaluate_gate
from edgefn.control.model import (
    DesiredState,
    FunctionDesired,
    ObservedState,
    VersionRef,
    VersionStats,
    VersionWeight,
    decode_desired,
    decode_observed,
    encode_desired,
    encode_observed,
)
from edgefn.control.reconciler import Reconciler, ReconcilerOptions, ReconcilerStatistics, Stage
from edgefn.control.registry import (
    FunctionRecord,
    ManifestSummary,
    Registry,
    RegistryStatistics,
    VersionInfo,
)

__all__ = [
    "STRATEGIES",
    "Conflict",
    "ControlError",
    "DeployRequested",
    "DeploymentCompleted",
    "DeploymentRecord",
    "DeploymentStarted",
    "DesiredState",
    "Event",
    "FunctionDesired",
    "FunctionRecord",
    "FunctionRestored",
    "FunctionStatus",
    "GateOutcome",
    "GateResult",
    "GateThresholds",
    "Instruction",
    "LocationForgotten",
    "LocationStatus",
    "ManifestSummary",
    "NodeObserved",
    "NotFound",
    "ObservedState",
    "PlacementChosen",
    "Reconciler",
    "ReconcilerOptions",
    "ReconcilerStatistics",
    "Registry",
    "RegistryStatistics",
    "Rejected",
    "RollbackRequested",
    "RolledBack",
    "Stage",
    "StageAdvanced",
    "Tick",
    "Untrusted",
    "VersionInfo",
    "VersionRef",
    "VersionStats",
    "VersionWeight",
    "WriteDesired",
    "aggregate",
    "decode_desired",
    "decode_observed",
    "encode_desired",
    "encode_observed",
    "evaluate_gate",
]
