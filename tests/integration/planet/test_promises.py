"""Promises at the edges of time, on a fresh real planet (issue #11's "done when").

Right after ``edgefn deploy --wait`` returns, with nothing waited for in between:

- a session write at one location followed at once by a session read at another returns the
  write, on the namespace's very first write too;
- strong increments from all four locations all succeed (none refused on a healthy planet) and
  the final count equals the acknowledged increments;

and a revived node answers 503 ``not_ready`` (or refuses connections) until it serves the
deployed function, never 404; a node restarted with a skewed KV clock (``edgefn net skew``) stamps
its writes that far ahead.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn.errors import PlanetError
from edgefn.planet.client import PlanetClient
from edgefn.state.hlc import physical_ms_of
from tests.planet_helpers import (
    REPO,
    Planet,
    PlanetFactory,
    PlanetSpec,
    edgefn,
    internal_client,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOST = {"host": "counter.localhost"}
SESSION = "x-edgefn-session"
PER_LOCATION = 4


@pytest.fixture(scope="module")
def fresh(planet_factory: PlanetFactory) -> Planet:
    p = planet_factory("promises", PlanetSpec(locations=4))
    p.deploy(REPO / "examples/counter")
    return p


def _urls(info: dict[str, Any]) -> list[str]:
    return [loc["url"] for loc in info["locations"]]


def test_first_session_write_is_read_at_once_at_another_location(
    fresh: tuple[dict[str, Any], Path],
) -> None:
    urls = _urls(fresh[0])
    with httpx.Client(timeout=30, trust_env=False) as c:
        for i, (a, b) in enumerate(zip(urls, urls[1:] + urls[:1], strict=True)):
            wrote = c.put(
                f"{a}/put?key=first{i}&consistency=session", content=f"v{i}", headers=HOST
            )
            assert wrote.status_code == 200, wrote.text
            token = wrote.headers[SESSION]
            read = c.get(
                f"{b}/get?key=first{i}&consistency=session", headers={**HOST, SESSION: token}
            )
            assert read.status_code == 200, (i, read.text)
            assert read.json()["value"] == f"v{i}", read.text
            assert read.json()["served_by"] != wrote.json()["served_by"]


def test_strong_increments_from_every_location_right_after_deploy(
    fresh: tuple[dict[str, Any], Path],
) -> None:
    urls = _urls(fresh[0])

    def increment(i: int) -> httpx.Response:
        with httpx.Client(timeout=60, trust_env=False) as c:
            return c.post(f"{urls[i % len(urls)]}/incr?key=hits", headers=HOST)

    with concurrent.futures.ThreadPoolExecutor(len(urls) * PER_LOCATION) as pool:
        answers = list(pool.map(increment, range(len(urls) * PER_LOCATION)))
    refused = [(a.status_code, a.text) for a in answers if a.status_code != 200]
    assert refused == [], refused
    counts = sorted(a.json()["count"] for a in answers)
    assert counts == list(range(1, len(answers) + 1))  # each acknowledged exactly once
    final = httpx.get(
        f"{urls[1]}/get?key=hits&consistency=strong", headers=HOST, timeout=30, trust_env=False
    )
    assert final.status_code == 200, final.text
    assert final.json()["value"] == str(len(answers))


def test_a_revived_node_never_answers_404(fresh: tuple[dict[str, Any], Path]) -> None:
    info, state = fresh
    target = info["locations"][2]
    seen: dict[int, int] = {}
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=5, trust_env=False) as c:
            while not stop.is_set():
                try:
                    r = c.get(f"{target['url']}/get?key=hits", headers=HOST)
                except httpx.HTTPError:
                    time.sleep(0.005)  # refused while the process is down: not an answer
                    continue
                seen[r.status_code] = seen.get(r.status_code, 0) + 1
                if r.status_code == 404:
                    stop.set()

    edgefn("net", "kill", target["name"], state_dir=state)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        edgefn("net", "revive", target["name"], state_dir=state)
        wait_for(
            lambda: seen.get(200, 0) >= 20 or stop.is_set(),
            timeout_s=60,
            what="20 answers 200 (or a 404) from the revived node",
        )
    finally:
        stop.set()
        poller.join(timeout=10)
    assert 404 not in seen, seen
    assert seen.get(200, 0) >= 20, seen
    assert set(seen) <= {200, 503}, seen


def test_a_conflict_tells_the_function_the_current_revision(
    fresh: tuple[dict[str, Any], Path],
) -> None:
    url = _urls(fresh[0])[0]
    with httpx.Client(timeout=30, trust_env=False, headers=HOST) as c:
        first = c.put(f"{url}/put?key=cas&consistency=strong", content="a")
        assert first.status_code == 200, first.text
        again = c.put(f"{url}/put?key=cas&consistency=strong", content="b")
        current = again.json()["revision"]
        stale = c.put(f"{url}/put?key=cas&consistency=strong&if_revision=1", content="c")
    assert stale.status_code == 409, stale.text
    assert stale.json()["revision"] == current > 1


def test_a_node_restarted_with_a_skewed_clock_stamps_its_writes_ahead(
    fresh: tuple[dict[str, Any], Path],
) -> None:
    info, state = fresh
    target = info["locations"][3]
    out = edgefn("net", "skew", target["name"], "15000", "--json", state_dir=state)
    assert out["clock_skew_ms"] == 15000
    try:
        with internal_client(state, timeout=30) as c:
            put = c.put(f"{target['internal_url']}/_edgefn/kv/counts/skewed", content=b"x")
        assert put.status_code == 200, put.text
        hlc, origin = put.json()["stamp"]
        assert origin == target["name"]
        ahead_ms = physical_ms_of(hlc) - time.time() * 1000
        assert 10_000 < ahead_ms < 20_000, ahead_ms
    finally:
        edgefn("net", "skew", target["name"], "0", "--json", state_dir=state)
    bad = edgefn("net", "skew", target["name"], "99999", state_dir=state, check=False)
    assert bad.returncode != 0
    assert "out of range" in bad.stderr
    assert "Traceback" not in bad.stderr
    # The supervisor checks too (its API is signed, but a caller may still send nonsense).
    client = PlanetClient(state)
    try:
        for wrong in (10**6, "5000", True):
            with pytest.raises(PlanetError, match="must be an integer within"):
                client.skew(target["name"], wrong)  # type: ignore[arg-type]
        with pytest.raises(PlanetError, match="unknown location"):
            client.skew("nowhere", 5)
    finally:
        client.close()
