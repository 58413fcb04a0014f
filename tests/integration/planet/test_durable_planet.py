"""Durable objects on a real planet (#14): a counter incremented concurrently from 4 locations
ends at exactly the number of acknowledged increments, also when its home is killed midway.

examples/durable-counter counts each op id once (a transaction with the id), so a client may
retry an increment whose reply it never got. Each of 4 clients sends its own increments to its
own location and retries each one (same id) until it is acknowledged, moving to the next location
when its own is gone. The object's home is made at the first location (``hint``; near the core on
the default topology, so its writes are quick) and killed (SIGKILL) once a third of the
increments are acknowledged; the object must move and keep every acknowledged increment.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.planet_helpers import REPO, Planet, PlanetFactory, PlanetSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOST = {"host": "durable-counter.localhost"}
PER_CLIENT = 40
CLIENTS = 4


@pytest.fixture(scope="module")
def planet(planet_factory: PlanetFactory) -> Planet:
    p = planet_factory("durable", PlanetSpec(locations=CLIENTS))
    p.deploy(REPO / "examples/durable-counter")
    return p


@pytest.mark.timeout(300)
def test_concurrent_increments_survive_the_homes_death(planet: Planet) -> None:
    names = planet.names
    home, clients = names[0], names[:CLIENTS]
    urls = planet.public_urls
    with httpx.Client(timeout=30, trust_env=False) as c:
        first = c.get(f"{urls[clients[1]]}/value", params={"name": "c", "hint": home}, headers=HOST)
        assert first.status_code == 200, first.text
        assert first.json() == {"n": 0, "rang": 0, "home": home}
    acked: list[str] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(index: int) -> None:
        order = clients[index:] + clients[:index]  # own location first, then the others
        with httpx.Client(timeout=30, trust_env=False) as c:
            for i in range(PER_CLIENT):
                op = f"{index}-{i}"
                deadline = time.monotonic() + 90
                at = 0
                while True:
                    assert time.monotonic() < deadline, f"op {op} never acknowledged: {errors[-3:]}"
                    url = urls[order[at % len(order)]]
                    try:
                        r = c.post(f"{url}/increment", params={"name": "c", "op": op}, headers=HOST)
                    except httpx.HTTPError as err:
                        errors.append(f"{op}: {type(err).__name__}")
                        at += 1
                        continue
                    if r.status_code == 200:
                        with lock:
                            acked.append(op)
                        break
                    errors.append(f"{op}: {r.status_code} {r.text[:120]}")
                    time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while len(acked) < CLIENTS * PER_CLIENT // 3 and any(t.is_alive() for t in threads):
        time.sleep(0.02)
    planet.edgefn("net", "kill", home)
    at_kill = len(acked)
    for t in threads:
        t.join(timeout=240)
    elapsed = time.monotonic() - t0
    assert all(not t.is_alive() for t in threads)
    assert len(set(acked)) == CLIENTS * PER_CLIENT
    with httpx.Client(timeout=30, trust_env=False) as c:
        final = c.get(f"{urls[clients[1]]}/value", params={"name": "c"}, headers=HOST).json()
    print(
        f"{len(acked)} increments acknowledged ({at_kill} before the home {home} was killed) in "
        f"{elapsed:.1f} s; final count {final['n']} at new home {final['home']}; "
        f"{len(errors)} retried replies"
    )
    assert final["n"] == len(acked)
    assert final["home"] != home


@pytest.mark.timeout(300)
def test_a_partitioned_home_loses_the_object_and_no_write_is_lost_or_doubled(
    planet: Planet,
) -> None:
    """The home is cut off from the backbone (its users still reach it). It cannot renew its
    lease, so it stops serving the object before the lease ends; another location takes the
    object over; after heal the old home forwards to the new one. Every acknowledged increment,
    from either side, is in the final count, and none twice."""
    names = planet.names
    # names[0] may be down: the test above kills it.
    home, others = names[2], [names[1], names[3]]
    urls = planet.public_urls
    acked: set[str] = set()
    with httpx.Client(timeout=30, trust_env=False) as c:

        def inc(where: str, op: str) -> bool:
            try:
                r = c.post(f"{urls[where]}/increment", params={"name": "p", "op": op}, headers=HOST)
            except httpx.HTTPError:
                return False
            if r.status_code == 200:
                acked.add(op)
                return True
            return False

        assert (
            c.get(f"{urls[home]}/value", params={"name": "p", "hint": home}, headers=HOST).json()[
                "home"
            ]
            == home
        )
        for i in range(10):
            assert inc(others[i % 2], f"before-{i}")
        planet.edgefn("net", "partition", home, "--json")
        try:
            deadline = time.monotonic() + 60
            moved = False
            i = 0
            while time.monotonic() < deadline and not moved:
                i += 1
                inc(home, f"cut-home-{i}")  # fails once the lease is gone: no store, no peers
                if inc(others[i % 2], f"cut-other-{i}"):
                    r = c.get(f"{urls[others[0]]}/value", params={"name": "p"}, headers=HOST)
                    moved = r.status_code == 200 and r.json()["home"] != home
                time.sleep(0.2)
            assert moved, "the object never moved away from the partitioned home"
            for j in range(10):
                inc(others[j % 2], f"after-move-{j}")
        finally:
            planet.edgefn("net", "heal", "--json")
        # After heal the old home reaches the object at its new home.
        deadline = time.monotonic() + 60
        while not inc(home, "healed") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "healed" in acked
        final = c.get(f"{urls[others[0]]}/value", params={"name": "p"}, headers=HOST).json()
    print(f"partitioned home {home}: {len(acked)} acknowledged, final {final}")
    assert final["n"] == len(acked)
