"""Suite-wide settings and the shared real-planet fixture.

Hypothesis: no per-example deadline and no "too slow" health check. The suite runs on a 2-core
machine next to real nats-servers and worker processes; wall-clock timing there says nothing about
the code under test (timing goals live in benchmarks).

``planet_factory`` is how a module gets a real planet: its own module-scoped ``planet`` fixture
calls ``planet_factory("name", PlanetSpec(...))``, deploys what its tests need and yields the
planet; the factory stops every planet it started when the module is done (see
``tests/planet_helpers.start_planet`` for start, readiness, teardown and the leftover check).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, settings

from tests.planet_helpers import Planet, PlanetFactory, PlanetSpec, start_planet

settings.register_profile(
    "edgefn",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("edgefn")


@pytest.fixture(scope="module")
def planet_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlanetFactory]:
    """Start real planets (``edgefn up``) that live until the end of the module."""
    with ExitStack() as planets:

        def start(name: str, spec: PlanetSpec) -> Planet:
            return planets.enter_context(start_planet(tmp_path_factory.mktemp(name), spec))

        yield start
