"""Global traffic management: pure machines shared by the edge node and the simulator.

* :mod:`.policy` — serve here or forward: RTT + predicted queueing + penalties, weights, affinity.
* :mod:`.health` — phi-accrual heartbeats, active probes, passive outlier ejection.
* :mod:`.ratelimit` — GCRA per key, token bucket, planet-wide limit split by demand.
* :mod:`.admission` — adaptive concurrency limit, bounded queue, early 503 with Retry-After.
* :mod:`.hashing` — weighted rendezvous hashing for session affinity.
* :mod:`.headers` — signed forwarding headers (hop count, forwarders).
"""

from __future__ import annotations

from edgefn.routing._errors import RoutingConfigError
from edgefn.routing._limits import AimdLimit, Gradient2Limit, LimitConfig
from edgefn.routing._phi import PhiAccrualDetector
from edgefn.routing.admission import (
    AdmissionConfig,
    AdmissionController,
    AdmissionStatistics,
    AdmissionTick,
    Admit,
    Arrived,
    Cancelled,
    Completed,
    Queue,
    Reject,
    RejectReason,
)
from edgefn.routing.hashing import rendezvous_choose, rendezvous_rank, rendezvous_score
from edgefn.routing.headers import (
    FORWARD_HEADERS,
    ForwardCheck,
    ForwardInfo,
    inspect_forward,
    next_forward,
    sign_forward,
    strip_forward_headers,
    verify_forward,
)
from edgefn.routing.health import (
    Forget,
    HealthConfig,
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
from edgefn.routing.policy import (
    HealthChanged,
    LoadReport,
    LoadReported,
    RouteDecision,
    RouteReason,
    RouteRequest,
    RoutingConfig,
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
    SharesChanged,
    ShareTick,
    TokenBucket,
    retry_after_header,
)

__all__ = [
    "FORWARD_HEADERS",
    "AdmissionConfig",
    "AdmissionController",
    "AdmissionStatistics",
    "AdmissionTick",
    "Admit",
    "AimdLimit",
    "Arrived",
    "Cancelled",
    "Completed",
    "DemandReport",
    "Forget",
    "ForwardCheck",
    "ForwardInfo",
    "Gcra",
    "GlobalRateShare",
    "Gradient2Limit",
    "HealthChanged",
    "HealthConfig",
    "HealthStatistics",
    "HealthTable",
    "HealthTick",
    "Heartbeat",
    "LimitConfig",
    "LoadReport",
    "LoadReported",
    "LocationLeft",
    "MarkHealthy",
    "MarkUnhealthy",
    "OutlierConfig",
    "PhiAccrualDetector",
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
    "RoutingPolicy",
    "RoutingStatistics",
    "RoutingWeights",
    "SendProbe",
    "ShareTick",
    "SharesChanged",
    "TokenBucket",
    "Track",
    "WeightsChanged",
    "inspect_forward",
    "next_forward",
    "rendezvous_choose",
    "rendezvous_rank",
    "rendezvous_score",
    "retry_after_header",
    "sign_forward",
    "strip_forward_headers",
    "verify_forward",
]
