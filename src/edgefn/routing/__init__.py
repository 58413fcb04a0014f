"""Global traffic management: pure machines shared by the edge node and the simulator.

* :mod:`.policy` — serve here or forward: RTT + predicted queueing + penalties, weights, affinity.
* :mod:`.nearest` — the nearest-location baseline (``--routing nearest``).
* :mod:`.failover` — which alternates a failed forward tries, and when a retry is safe.
* :mod:`.health` — phi-accrual heartbeats, active probes, passive outlier ejection.
* :mod:`.suspicion` — a location that refused a connection is avoided until it heartbeats again.
* :mod:`.ratelimit` — GCRA per key, token bucket, planet-wide limit split by demand.
* :mod:`.local_limits` — one location's share of each function's limit, and per-client limits.
* :mod:`.admission` — adaptive concurrency limit, bounded queue, early 503 with Retry-After.
* :mod:`.thermal` — a hot location: capacity factor for admission, ``hot`` in its load report.
* :mod:`.hashing` — weighted rendezvous hashing for session affinity, and a request's affinity key.
* :mod:`.headers` — signed forwarding headers (hop count, forwarders), the planet MAC.
* :mod:`.internal_auth` — signed internal requests (replay-safe) and the entry's client identity.
* :mod:`.loadgen_plan` — open-loop arrival schedule and the summary ``edgefn load`` prints.
"""

from __future__ import annotations

from edgefn.routing._errors import RoutingConfigError
from edgefn.routing._limits import AimdLimit, Gradient2Limit, LimitConfig
from edgefn.routing._phi import PhiAccrualDetector
from edgefn.routing.admission import (
    AdmissionConfig,
    AdmissionController,
    AdmissionEvent,
    AdmissionInstruction,
    AdmissionStatistics,
    AdmissionTick,
    Admit,
    Arrived,
    Cancelled,
    CapacityChanged,
    Completed,
    Queue,
    Reject,
    RejectReason,
)
from edgefn.routing.failover import IDEMPOTENT_METHODS, failover_targets, may_retry
from edgefn.routing.hashing import (
    affinity_key,
    rendezvous_choose,
    rendezvous_rank,
    rendezvous_score,
)
from edgefn.routing.headers import (
    FORWARD_HEADERS,
    ForwardCheck,
    ForwardInfo,
    check_secret,
    inspect_forward,
    next_forward,
    planet_mac,
    sign_forward,
    strip_forward_headers,
    verify_forward,
)
from edgefn.routing.health import (
    Forget,
    HealthConfig,
    HealthEvent,
    HealthInstruction,
    HealthStatistics,
    HealthTable,
    HealthTick,
    Heartbeat,
    MarkHealthy,
    MarkUnhealthy,
    OutlierConfig,
    ProbeResult,
    RequestOutcome,
    SendProbe,
    Track,
)
from edgefn.routing.internal_auth import (
    INTERNAL_AUTH_HEADER,
    AuthCheck,
    InternalVerifier,
    VerifierStatistics,
    body_sha256,
    sign_client,
    sign_internal,
    verify_client,
)
from edgefn.routing.loadgen_plan import (
    ClientCity,
    LoadResult,
    LoadSummary,
    PlannedRequest,
    percentile,
    plan_arrivals,
    select_clients,
)
from edgefn.routing.local_limits import LocalRateLimits, LocalRateStatistics, PeerDemand
from edgefn.routing.nearest import route_nearest
from edgefn.routing.policy import (
    HealthChanged,
    LoadReport,
    LoadReported,
    RouteDecision,
    RouteReason,
    RouteRequest,
    RoutingConfig,
    RoutingEvent,
    RoutingPolicy,
    RoutingStatistics,
    RoutingWeights,
    WeightsChanged,
)
from edgefn.routing.ratelimit import (
    DemandReport,
    Gcra,
    GlobalRateShare,
    LocationLeft,
    RateDecision,
    RateLimiterStatistics,
    ShareEvent,
    SharesChanged,
    ShareTick,
    TokenBucket,
    retry_after_header,
)
from edgefn.routing.suspicion import (
    ConnectRefused,
    HeardFrom,
    Suspicion,
    SuspicionConfig,
    SuspicionEvent,
    SuspicionStatistics,
    TableVerdict,
)
from edgefn.routing.thermal import ThermalConfig, ThermalState, ThermalThrottle

__all__ = [
    "FORWARD_HEADERS",
    "IDEMPOTENT_METHODS",
    "INTERNAL_AUTH_HEADER",
    "AdmissionConfig",
    "AdmissionController",
    "AdmissionEvent",
    "AdmissionInstruction",
    "AdmissionStatistics",
    "AdmissionTick",
    "Admit",
    "AimdLimit",
    "Arrived",
    "AuthCheck",
    "Cancelled",
    "CapacityChanged",
    "ClientCity",
    "Completed",
    "ConnectRefused",
    "DemandReport",
    "Forget",
    "ForwardCheck",
    "ForwardInfo",
    "Gcra",
    "GlobalRateShare",
    "Gradient2Limit",
    "HealthChanged",
    "HealthConfig",
    "HealthEvent",
    "HealthInstruction",
    "HealthStatistics",
    "HealthTable",
    "HealthTick",
    "HeardFrom",
    "Heartbeat",
    "InternalVerifier",
    "LimitConfig",
    "LoadReport",
    "LoadReported",
    "LoadResult",
    "LoadSummary",
    "LocalRateLimits",
    "LocalRateStatistics",
    "LocationLeft",
    "MarkHealthy",
    "MarkUnhealthy",
    "OutlierConfig",
    "PeerDemand",
    "PhiAccrualDetector",
    "PlannedRequest",
    "ProbeResult",
    "Queue",
    "RateDecision",
    "RateLimiterStatistics",
    "Reject",
    "RejectReason",
    "RequestOutcome",
    "RouteDecision",
    "RouteReason",
    "RouteRequest",
    "RoutingConfig",
    "RoutingConfigError",
    "RoutingEvent",
    "RoutingPolicy",
    "RoutingStatistics",
    "RoutingWeights",
    "SendProbe",
    "ShareEvent",
    "ShareTick",
    "SharesChanged",
    "Suspicion",
    "SuspicionConfig",
    "SuspicionEvent",
    "SuspicionStatistics",
    "TableVerdict",
    "ThermalConfig",
    "ThermalState",
    "ThermalThrottle",
    "TokenBucket",
    "Track",
    "VerifierStatistics",
    "WeightsChanged",
    "affinity_key",
    "body_sha256",
    "check_secret",
    "failover_targets",
    "inspect_forward",
    "may_retry",
    "next_forward",
    "percentile",
    "plan_arrivals",
    "planet_mac",
    "rendezvous_choose",
    "rendezvous_rank",
    "rendezvous_score",
    "retry_after_header",
    "route_nearest",
    "select_clients",
    "sign_client",
    "sign_forward",
    "sign_internal",
    "strip_forward_headers",
    "verify_client",
    "verify_forward",
]
