"""A real Prometheus scrapes the planet: the core's ``/v1/metrics`` (the planet's rollups) and one
node's ``/_edgefn/metrics``, each with its token, and counts what clients received.

Debian's ``prometheus`` (``/usr/bin/prometheus``; ``.ci/debian-packages`` installs it) runs with
a config this test writes: a 1 s scrape interval, the bearer tokens in 0600 files
(``authorization.credentials_file``), its TSDB in the test's directory, on a free port of
127.0.0.1; started and stopped by pid. Without the binary the test fails saying what to install:
a skipped scrape test would hide an exposition Prometheus no longer reads.

The test: clients at every location send requests of several status classes, and Prometheus's
HTTP API (``/api/v1/query``) must give, per serving location and status class, exactly the counts
the clients received (from the core's counters, and from the scraped node's own counter for its
location), both targets ``up``, the latency summary's count equal to the requests, and a
last-seen gauge for every location. Then ``/v1/metrics`` refuses no token and a wrong token,
shows another account nothing of the function, and the function's account its series but not
the planet's locations.
"""

from __future__ import annotations

import collections
import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.planet_helpers import Planet, credentials, deployed, free_port, wait_for

# Run alone, the one test's setup starts the shared planet (50-80 s on a busy machine) and its
# teardown stops it, inside the per-test timeout; its own part is ~17 s (deploy 7, scrape 9).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

PROMETHEUS = Path("/usr/bin/prometheus")
FN = "prom1"
CODE = """
from edgefn import Response

async def fetch(request, env, ctx):
    return Response("p", status=int(request.query.get("s", "200")))
"""
STATUSES = (200, 200, 302, 404, 500)
WRONG = "edgefn_" + "a" * 12 + "_" + "b" * 64  # well formed, never issued

Counts = collections.Counter[tuple[str, str]]


@pytest.fixture(scope="module")
def planet(observed_planet: Planet, tmp_path_factory: pytest.TempPathFactory) -> Planet:
    return deployed(observed_planet, tmp_path_factory, FN, CODE)


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _config(planet: Planet, tmp: Path, node: str) -> dict[str, Any]:
    """Two jobs: the core's rollups (admin token) and one node's own metrics (metrics token)."""
    core_token = _private(tmp / "core-token", credentials(planet.state)["token"])

    def job(name: str, url: str, path: str, token: Path) -> dict[str, Any]:
        return {
            "job_name": name,
            "metrics_path": path,
            "authorization": {"type": "Bearer", "credentials_file": str(token)},
            "static_configs": [{"targets": [urlsplit(url).netloc]}],
        }

    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            job("edgefn-core", planet.info["api_url"], "/v1/metrics", core_token),
            job(
                "edgefn-node",
                planet.public_urls[node],
                "/_edgefn/metrics",
                planet.state / "metrics-token",
            ),
        ],
    }


@pytest.fixture
def prometheus(planet: Planet, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping ``planet`` (the core, and the first location's node)."""
    if not PROMETHEUS.exists():
        pytest.fail(
            f"{PROMETHEUS} not found: this test needs Debian's prometheus. Install it with "
            "`apt-get install prometheus` (.ci/debian-packages does this in CI); nothing is "
            "downloaded at run time.",
            pytrace=False,
        )
    # JSON is YAML: no YAML writer needed.
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps(_config(planet, tmp_path, planet.names[0]), indent=1))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url, proc), timeout_s=30, what="prometheus ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, f"prometheus exited with {proc.returncode}; see its log"
    try:
        return httpx.get(f"{url}/-/ready", timeout=2, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10, trust_env=False)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _by(url: str, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s["metric"].get(k, "") for k in labels): float(s["value"][1])
        for s in _query(url, promql)
    }


def _scrape(planet: Planet, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(
        planet.info["api_url"] + "/v1/metrics", headers=headers, timeout=10, trust_env=False
    )


def _token(planet: Planet, name: str, account: str) -> str:
    admin = credentials(planet.state)["token"]
    r = httpx.post(
        planet.info["api_url"] + "/v1/tokens",
        json={"name": name, "scopes": ["read"], "account": account},
        headers={"authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _send(planet: Planet, per_location: int) -> Counts:
    """``per_location`` requests from a client at each location; what they received."""
    got: Counts = collections.Counter()
    with httpx.Client(timeout=15, trust_env=False) as http:
        for loc in planet.names:
            for i in range(per_location):
                status = STATUSES[i % len(STATUSES)]
                r = http.get(
                    f"{planet.entry_url}/?s={status}",
                    headers={"host": f"{FN}.localhost", "x-edgefn-client-location": loc},
                    follow_redirects=False,
                )
                assert r.status_code == status, r.text
                got[(r.headers["x-edgefn-location"], f"{status // 100}xx")] += 1
    return got


def _check_access(planet: Planet) -> None:
    for token in (None, WRONG):
        r = _scrape(planet, token)
        assert (r.status_code, r.json()["error"]) == (401, "unauthorized"), r.text
    # Another account's read token: valid, but nothing of this function (default's).
    other = _scrape(planet, _token(planet, "prom-other", "other"))
    assert other.status_code == 200, other.text
    assert "edgefn_planet_requests_total" in other.text  # the family, without samples
    assert f'function="{FN}"' not in other.text
    assert "edgefn_location_" not in other.text
    # The function's account: its series, but not the planet's locations (the operator's).
    mine = _scrape(planet, _token(planet, "prom-default", "default"))
    assert mine.status_code == 200, mine.text
    assert f'function="{FN}"' in mine.text
    assert "edgefn_location_" not in mine.text


def _node_counts(url: str, node: str) -> Counts:
    """What the scraped node's own counter says it answered (status codes to classes)."""
    out: Counts = collections.Counter()
    rows = _by(url, f'edgefn_requests_total{{function="{FN}"}}', "location", "status")
    for (location, status), n in rows.items():
        assert location == node
        out[(location, f"{int(status) // 100}xx")] += int(n)
    return out


def test_prometheus_scrapes_the_planets_rollups_and_a_node(planet: Planet, prometheus: str) -> None:
    sent = _send(planet, per_location=10)
    assert {loc for loc, _ in sent} == set(planet.names), sent  # every location served

    def core_counts() -> Counts:
        promql = (
            f'sum by (location, status_class) (edgefn_planet_requests_total{{function="{FN}"}})'
        )
        rows = _by(prometheus, promql, "location", "status_class")
        return Counts({(loc, status): int(n) for (loc, status), n in rows.items()})

    wait_for(lambda: core_counts() == sent, timeout_s=40, what="Prometheus's counts = clients'")
    _check_access(planet)  # now that the store holds the function's figures
    node = planet.names[0]
    mine = Counts({k: n for k, n in sent.items() if k[0] == node})
    wait_for(lambda: _node_counts(prometheus, node) == mine, timeout_s=20, what="node's counts")
    up = _by(prometheus, "up", "job")
    assert up == {("edgefn-core",): 1.0, ("edgefn-node",): 1.0}, up

    count = _by(prometheus, f'edgefn_planet_request_duration_seconds_count{{function="{FN}"}}',
                "location")  # fmt: skip
    assert {k[0]: int(v) for k, v in count.items()} == {
        loc: sum(n for (at, _), n in sent.items() if at == loc) for loc in planet.names
    }
    p99 = _by(prometheus, f'edgefn_planet_function_duration_seconds{{function="{FN}",'
              'quantile="0.99"}', "version")  # fmt: skip
    assert len(p99) == 1, p99
    assert all(0 < v < 30 and math.isfinite(v) for v in p99.values()), p99
    seen = _by(prometheus, "edgefn_location_last_seen_age_seconds", "location")
    assert {k[0] for k in seen} == set(planet.names), seen
    assert _by(prometheus, "edgefn_planet_metrics_omitted_series", "kind") == {
        ("triple",): 0.0,
        ("client_region",): 0.0,
    }
