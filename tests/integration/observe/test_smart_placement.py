"""``[placement] mode = "smart"`` on a real 4-location planet (nrt, mex, ist, cai; modelled RTTs):
the planner runs the function only where the observed clients are, every other location
forwards to it (every client is served), and a shift of demand to another continent moves the
placement there once, without going back and forth."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import httpx
import pytest

from tests.planet_helpers import Planet, credentials, edgefn, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FN = "smart1"
TOKYO = "35.68,139.69"
MEXICO_CITY = "19.43,-99.13"
CODE = """
from edgefn import Response

async def fetch(request, env, ctx):
    return Response("placed")
"""


def _status(p: Planet) -> dict[str, Any]:
    token = credentials(p.state)["token"]
    r = httpx.get(
        f"{p.info['api_url']}/v1/status", headers={"authorization": f"Bearer {token}"}, timeout=10
    )
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def _function(p: Planet) -> dict[str, Any]:
    return next(f for f in _status(p)["functions"] if f["function"] == FN)


def _placements(p: Planet) -> list[tuple[str, ...]]:
    return [
        tuple(e["locations"])
        for e in _status(p)["recent_events"]
        if e["type"] == "PlacementChosen" and e["function"] == FN
    ]


def _load(p: Planet, client_at: str, n: int) -> list[str]:
    """``n`` requests of clients at ``client_at`` through the entry: where each was served."""

    def one(_: int) -> str:
        r = httpx.get(
            f"{p.entry_url}/",
            headers={"host": f"{FN}.localhost", "x-edgefn-client-location": client_at},
            timeout=20,
        )
        assert r.status_code == 200, r.text
        return r.headers["x-edgefn-location"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def test_smart_placement_follows_the_clients_and_does_not_flap(
    observed_planet: Planet, tmp_path: Any
) -> None:
    p = observed_planet
    d = tmp_path / FN
    d.mkdir()
    (d / "edgefn.toml").write_text(
        f'name = "{FN}"\nmain = "main.py"\n[placement]\nmode = "smart"\nmin_replicas = 1\n'
    )
    (d / "main.py").write_text(CODE)
    p.deploy(d)
    first = _function(p)
    assert first["placement"]["observed"] is False  # no demand yet: the planet's cities
    # Spread demand: more replicas than min_replicas pay for themselves in RTT.
    assert 1 <= len(first["targets"]) <= 4

    # Clients in Tokyo only: the function moves to nrt; every request is answered meanwhile.
    def settled_at_nrt() -> bool:
        served = _load(p, TOKYO, 24)
        return _function(p)["targets"] == ["nrt"] and set(served) == {"nrt"}

    wait_for(settled_at_nrt, timeout_s=60, what="the function placed at nrt")
    # mex forwards to the only replica once the locations it left have let it go: they keep it
    # (and serve their own clients) for placement_grace_ms after nrt applied it.
    wait_for(lambda: set(_load(p, MEXICO_CITY, 8)) == {"nrt"}, timeout_s=30,
             what="mex forwarding to nrt after the grace")  # fmt: skip
    chosen = _function(p)["placement"]
    assert chosen["observed"] is True
    assert chosen["demand"]["as-east"] > 0
    assert "nrt" in chosen["reason"]

    # Demand shifts to Mexico City: the placement moves there, and stays.
    before = len(_placements(p))

    # Tokyo's requests are still in the demand window (5 min): nrt may stay beside mex while
    # its share of the RTT it saves outweighs a replica's cost; Mexico City is served at mex.
    def followed() -> bool:
        served = _load(p, MEXICO_CITY, 24)
        return "mex" in _function(p)["targets"] and set(served) == {"mex"}

    wait_for(followed, timeout_s=90, what="the placement following the clients to mex")
    moves = _placements(p)[before:]
    t_end = time.monotonic() + 8  # four re-plan intervals of steady demand
    while time.monotonic() < t_end:
        assert set(_load(p, MEXICO_CITY, 8)) == {"mex"}
    after = _placements(p)[before:]
    assert after == moves, "the placement changed again under steady demand"
    assert len(moves) == len(set(moves)), f"the placement went back and forth: {moves}"
    print(f"smart placement moves after the shift: {moves}")

    # edgefn plan --apply re-plans now and says why the function runs where it does. The same
    # demand keeps the placement, unless Tokyo's last requests leave the window meanwhile.
    applied = edgefn("plan", "--apply", FN, "--json", state_dir=p.state)
    assert applied["function"] == FN
    assert "mex" in applied["locations"]
    assert applied["moved"] is (applied["before"] != applied["locations"])
    wait_for(lambda: _function(p)["targets"] == applied["locations"], timeout_s=30,
             what="the applied placement deployed")  # fmt: skip
    assert applied["observed"] is True
    assert "mex" in applied["reason"]
    assert applied["mean_rtt_ms"] >= 0
    assert applied["demand"][0]["share"] > 0
    shown = edgefn("plan", "--apply", FN, state_dir=p.state)
    assert "smart placement of smart1" in shown.stdout
    assert "why:" in shown.stdout
    bad = edgefn("plan", "--apply", "nope", state_dir=p.state, check=False)
    assert bad.returncode != 0
    assert "unknown function 'nope'" in bad.stderr
    both = edgefn("plan", "--apply", FN, "--orlib", "x", state_dir=p.state, check=False)
    assert both.returncode != 0
    assert "--apply re-plans a running function" in both.stderr
