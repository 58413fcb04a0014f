"""``edgefn stats`` on a real 3-location planet: counts over a partition and heal equal what the
clients received, by location and status class; telemetry bytes per node per minute, measured
at the hubs."""

from __future__ import annotations

import collections
import re
import time
from typing import Any

import httpx
import pytest

from tests.planet_helpers import Planet, credentials, deployed, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FN = "stats1"
CODE = """
from edgefn import Response

async def fetch(request, env, ctx):
    return Response("x", status=int(request.query.get("s", "200")))
"""
STATUSES = (200, 200, 200, 302, 404, 500)
# Bytes of telemetry per node per minute: rollups of this workload are a few hundred bytes each;
# the bound leaves room for the acknowledgements and protocol lines (measured: see the output).
BYTES_PER_MINUTE_MAX = 64 * 1024

Counts = collections.Counter[tuple[str, str]]


@pytest.fixture(scope="module")
def planet(observed_planet: Planet, tmp_path_factory: pytest.TempPathFactory) -> Planet:
    return deployed(observed_planet, tmp_path_factory, FN, CODE)


def _send(http: httpx.Client, entry: str, client_at: str, n: int, got: Counts) -> None:
    """``n`` requests of a client at ``client_at``; what it received goes into ``got``."""
    for i in range(n):
        status = STATUSES[i % len(STATUSES)]
        r = http.get(
            f"{entry}/?s={status}",
            headers={"host": f"{FN}.localhost", "x-edgefn-client-location": client_at},
            follow_redirects=False,
        )
        assert r.status_code == status, r.text
        got[(r.headers["x-edgefn-location"], f"{status // 100}xx")] += 1


def _api(p: Planet, path: str) -> httpx.Response:
    token = credentials(p.state)["token"]
    return httpx.get(
        f"{p.info['api_url']}{path}", headers={"authorization": f"Bearer {token}"}, timeout=10
    )


def _counts(out: dict[str, Any]) -> Counts:
    counts: Counts = collections.Counter()
    for row in out["rows"]:
        for status, n in row["by_status"].items():
            if n:
                counts[(row["location"], status)] += n
    return counts


def _stats(p: Planet) -> Counts:
    """What /v1/stats says now (the CLI reads the same; polled here without a process each)."""
    return _counts(_api(p, f"/v1/stats/{FN}?window=30m").json())


def _telemetry_bytes(p: Planet) -> dict[str, int]:
    """Bytes each node's telemetry connection sent its hub so far (the hubs' /connz)."""
    out: dict[str, int] = {}
    for region in p.info["regions"]:
        conf = (p.state / "regions" / region / f"hub-{region}.conf").read_text()
        found = re.search(r'"http"\s*:\s*"([^"]+)"', conf)
        assert found, conf
        connz = httpx.get(f"http://{found.group(1)}/connz?limit=1024", timeout=10).json()
        for conn in connz.get("connections") or []:
            name = conn.get("name") or ""
            if name.startswith("telemetry-"):
                out[name.removeprefix("telemetry-")] = int(conn["in_bytes"])
    return out


def test_stats_count_exactly_what_clients_received_across_a_partition(planet: Planet) -> None:
    names = planet.names
    cut = names[0]
    entry = planet.entry_url
    sent: Counts = collections.Counter()
    bytes0, t0 = _telemetry_bytes(planet), time.monotonic()
    with httpx.Client(timeout=15, trust_env=False) as http:
        for loc in names:
            _send(http, entry, loc, 24, sent)
        wait_for(lambda: _stats(planet) == sent, timeout_s=30, what="stats before the cut")
        before = dict(sent)
        planet.edgefn("net", "partition", cut, "--json")
        try:
            for loc in names:
                _send(http, entry, loc, 18, sent)
            assert any(n > before.get(k, 0) for k, n in sent.items() if k[0] == cut), sent
            # The others' new rollups arrive; the cut location's wait in its buffer.
            others = {k: n for k, n in sent.items() if k[0] != cut}
            wait_for(
                lambda: {k: n for k, n in _stats(planet).items() if k[0] != cut} == others,
                timeout_s=30,
                what="the other locations' stats during the partition",
            )
            seen = _stats(planet)
            assert {k: n for k, n in seen.items() if k[0] == cut} == {
                k: n for k, n in before.items() if k[0] == cut
            }, "a cut-off node's rollups cannot have reached the core"
        finally:
            planet.edgefn("net", "heal", "--json")
        wait_for(lambda: _stats(planet) == sent, timeout_s=60, what="stats after the heal")
    bytes1, t1 = _telemetry_bytes(planet), time.monotonic()
    out = planet.edgefn("stats", FN, "--window", "30m", "--json")
    assert _counts(out) == sent  # and stays so: nothing counted twice after the backfill
    assert out["overflow_requests"] == 0
    # The function's CPU time, measured by its worker per invocation: some, never over the wall.
    assert all(0 < r["cpu_ms"] <= r["latency_ms_mean"] for r in out["rows"]), out["rows"]
    assert {r["client_region"] for r in out["rows"]} <= {"unknown", *planet.info["regions"]}
    # The cut node's connection may have been dropped and re-opened (its byte count restarts),
    # so the rate is measured on the nodes that stayed connected.
    rate = {
        loc: (bytes1[loc] - bytes0.get(loc, 0)) * 60 / (t1 - t0)
        for loc in bytes1
        if loc in names and loc != cut
    }
    print(f"telemetry bytes per node per minute over {t1 - t0:.0f} s: {rate}")
    assert set(rate) == set(names) - {cut}, rate
    assert all(0 < r < BYTES_PER_MINUTE_MAX for r in rate.values()), rate

    _check_errors_and_table(planet)


def _check_errors_and_table(planet: Planet) -> None:
    table = planet.edgefn("stats", FN, "--window", "1h")
    assert table.returncode == 0
    assert all(loc in table.stdout for loc in planet.names), table.stdout
    unknown = _api(planet, "/v1/stats/nosuchfn")
    assert unknown.status_code == 404
    assert unknown.json()["message"] == "unknown function 'nosuchfn'"
    bad = _api(planet, f"/v1/stats/{FN}?window=5w")
    assert (bad.status_code, bad.json()["error"]) == (400, "bad_request")
    # The API needs a token (of scope read; every scope: tests/integration/control).
    assert httpx.get(f"{planet.info['api_url']}/v1/stats/{FN}", timeout=10).status_code == 401
