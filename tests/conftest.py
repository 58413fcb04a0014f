"""Suite-wide settings.

Hypothesis: no per-example deadline and no "too slow" health check. The suite runs on a 2-core
machine next to real nats-servers and worker processes; wall-clock timing there says nothing about
the code under test (timing goals live in benchmarks).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "edgefn",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("edgefn")
