"""Events into the rollout reconciler, instructions out of it, and the records it reports.

Everything here is a frozen value. Drivers build events from the world (an API call, a node's
observed state arriving on the bus, a timer) and carry out instructions (write a location's desired
state to the bus, log a rollout step). Times are milliseconds passed in as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from edgefn.control.model import DesiredState, ObservedState, VersionRef

__all__ = [
    "STRATEGIES",
    "DeployRequested",
    "DeploymentCompleted",
    "DeploymentRecord",
    "DeploymentStarted",
    "Event",
    "FunctionRestored",
    "FunctionStatus",
    "Instruction",
    "LocationForgotten",
    "LocationStatus",
    "NodeObserved",
    "PlacementChosen",
    "Rejected",
    "RollbackRequested",
    "RolledBack",
    "StageAdvanced",
    "Tick",
    "WriteDesired",
]

STRATEGIES: Final = ("immediate", "canary")


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeObserved:
    """A node wrote its observed state (also how a location registers: generation 0)."""

    observed: ObservedState
    now_ms: int


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: re-evaluate soaks and gates."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class DeployRequested:
    """Roll ``version`` of ``function`` out. ``regions`` empty means every location."""

    function: str
    version: VersionRef
    strategy: str
    now_ms: int
    regions: tuple[str, ...] = ()
    # A canary stage advances after its soak only with evidence: at least the gates'
    # min_requests for the new version, unless the deployer says there is no traffic to wait for.
    allow_no_traffic: bool = False
    # Smart placement: the locations the planner chose (control/smart_placement.py); None: the
    # function is placed by ``regions`` (or everywhere).
    placed: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class PlacementChosen:
    """Smart placement re-planned: run ``function`` at ``locations`` from now on.

    The locations it leaves keep serving their active version until every chosen location
    applied it (make before break), so no client is left without a nearby replica meanwhile.
    """

    function: str
    locations: tuple[str, ...]
    now_ms: int


@dataclass(frozen=True, slots=True)
class RollbackRequested:
    """Go back to ``to`` (or, when None, to the previous version) everywhere, at once."""

    function: str
    to: VersionRef | None
    now_ms: int


@dataclass(frozen=True, slots=True)
class LocationForgotten:
    """An operator removed a location for good; its observed state no longer counts."""

    location: str


@dataclass(frozen=True, slots=True)
class FunctionRestored:
    """At start-up, adopt a function's persisted stable state (ignored if already known).

    A rollout that was running when the previous reconciler stopped is not restored: its
    locations go back to ``active``, the last version that completed.
    """

    function: str
    active: VersionRef | None
    previous: VersionRef | None
    regions: tuple[str, ...]
    now_ms: int
    placed: tuple[str, ...] | None = None


Event = (
    NodeObserved
    | Tick
    | DeployRequested
    | RollbackRequested
    | LocationForgotten
    | FunctionRestored
    | PlacementChosen
)


# -- instructions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteDesired:
    """Write ``state`` as the desired state of ``location``."""

    location: str
    state: DesiredState


@dataclass(frozen=True, slots=True)
class DeploymentStarted:
    function: str
    deployment_id: str
    version_id: str
    strategy: str
    stages: int


@dataclass(frozen=True, slots=True)
class StageAdvanced:
    function: str
    deployment_id: str
    stage: int
    locations: tuple[str, ...]
    weight: float
    reason: str


@dataclass(frozen=True, slots=True)
class DeploymentCompleted:
    function: str
    deployment_id: str
    version_id: str


@dataclass(frozen=True, slots=True)
class RolledBack:
    """Traffic went back to ``to_version_id`` (None: the function is no longer served)."""

    function: str
    deployment_id: str
    from_version_id: str
    to_version_id: str | None
    reason: str
    automatic: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """A request could not be carried out; ``reason`` and ``hint`` are user-facing."""

    function: str
    reason: str
    hint: str


Instruction = (
    WriteDesired | DeploymentStarted | StageAdvanced | DeploymentCompleted | RolledBack | Rejected
)


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """One deployment. ``status``: in_progress | completed | rolled_back | superseded."""

    deployment_id: str
    function: str
    version_id: str
    strategy: str
    status: str
    stage: int
    stages: int
    started_ms: int
    finished_ms: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LocationStatus:
    location: str
    region: str
    url: str
    applied_generation: int
    desired_generation: int
    last_seen_ms: int
    load_errors: tuple[tuple[str, str], ...]

    @property
    def converged(self) -> bool:
        return self.applied_generation >= self.desired_generation


@dataclass(frozen=True, slots=True)
class FunctionStatus:
    """Where a function stands: versions, rollout and convergence over its target locations."""

    function: str
    active: VersionRef | None
    previous: VersionRef | None
    deployment: DeploymentRecord | None
    regions: tuple[str, ...]
    targets: tuple[str, ...]
    version_vector: tuple[tuple[str, int], ...]
    converged: bool
    waiting_for: tuple[str, ...]
    # Smart placement: the chosen locations (None: placed by regions or everywhere).
    placed: tuple[str, ...] | None = None
