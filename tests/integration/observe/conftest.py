"""One planet for every observability test: starting a planet is most of each test's time, and
stats, tail and the rest read the same kind of traffic. Each module deploys its own function on
it; a test that partitions or kills a location heals or revives it before it ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.planet_helpers import Planet, PlanetSpec, start_planet

# Four locations in several regions, with the world model's RTTs on every link.
OBSERVED = PlanetSpec(locations=4, emulate_rtt=True)


@pytest.fixture(scope="package")
def observed_planet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planet]:
    with start_planet(tmp_path_factory.mktemp("observe"), OBSERVED) as planet:
        yield planet
