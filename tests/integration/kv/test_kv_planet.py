"""The replicated KV on a real 5-location planet (issue #4's "done when"), through the CLI and HTTP.

One planet for the module (core + hubs + 5 nodes, links delayed by the world model's RTT), with
``examples/counter`` deployed: its ``env.COUNTS`` binds namespace ``counts``. Clients are this test
process (threads), talking to each location directly, like users pinned to a location.
"""

from __future__ import annotations

import base64
import concurrent.futures
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn.state import Item
from edgefn.state.checkers import (
    HistOp,
    check_convergence,
    check_no_lost_writes,
    check_sessions,
)
from edgefn.state.lincheck import LinOp, check_linearizable
from tests.planet_helpers import (
    REPO,
    Planet,
    PlanetFactory,
    PlanetSpec,
    edgefn,
    internal_client,
    internal_urls,
    wait_for,
    wait_kv_connected,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOST = {"host": "counter.localhost"}
SESSION = "x-edgefn-session"


@pytest.fixture(scope="module")
def planet(planet_factory: PlanetFactory) -> Planet:
    p = planet_factory("kvplanet", PlanetSpec(locations=5))
    p.deploy(REPO / "examples/counter")
    wait_kv_connected(p, "counts")
    return p


def _state(url: str, state_dir: Path) -> dict[str, Any]:
    """The replica's content and statistics, from the node's internal listener (signed)."""
    with internal_client(state_dir, timeout=10) as c:
        r = c.get(f"{url}/_edgefn/kvstate/counts")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _converged(urls: list[str], state_dir: Path) -> list[dict[str, Any]] | None:
    states = [_state(u, state_dir) for u in urls]
    return states if len({s["digest"] for s in states}) == 1 else None


def _items(state: dict[str, Any]) -> dict[str, Item]:
    return {
        key: Item(
            key,
            base64.b64decode(it["value_b64"]),
            it["revision"],
            stamp=(it["stamp"][0], it["stamp"][1]),
        )
        for key, it in state["items"].items()
    }


def _urls(info: dict[str, Any]) -> dict[str, str]:
    return {loc["name"]: loc["url"] for loc in info["locations"]}


# --------------------------------------------------------------------------- strong CAS


def test_concurrent_strong_increments_match_acknowledged_responses(
    planet: tuple[dict[str, Any], Path],
) -> None:
    """Four locations run a CAS increment loop concurrently: final count == acknowledged."""
    info, _ = planet
    urls = list(_urls(info).values())[:4]
    key = "cas-counter"

    def client(url: str) -> list[int]:
        counts = []
        with httpx.Client(timeout=30) as c:
            for _ in range(8):
                r = c.post(f"{url}/incr", params={"key": key}, headers=HOST)
                if r.status_code == 200:
                    counts.append(r.json()["count"])
        return counts

    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        acked = [n for counts in pool.map(client, urls) for n in counts]
    final = httpx.get(
        f"{urls[0]}/get", params={"key": key, "consistency": "strong"}, headers=HOST, timeout=10
    ).json()
    assert int(final["value"]) == len(acked)
    assert sorted(acked) == list(range(1, len(acked) + 1))  # each count handed out once
    assert len(acked) >= 24, "most increments should succeed on a healthy planet"


# --------------------------------------------------------------------------- sessions


def test_session_write_is_visible_to_the_same_session_at_another_location(
    planet: tuple[dict[str, Any], Path],
) -> None:
    """Write at the core's location, read at once with the token at the farthest ones."""
    info, _ = planet
    urls = _urls(info)
    names = list(urls)
    with httpx.Client(timeout=10) as c:
        for i, reader in enumerate(names[1:]):
            key = f"sess-{i}"
            w = c.put(
                f"{urls[names[0]]}/put",
                params={"key": key, "consistency": "session"},
                content=f"hello-{i}",
                headers=HOST,
            )
            assert w.status_code == 200, w.text
            token = w.headers[SESSION]
            r = c.get(
                f"{urls[reader]}/get",
                params={"key": key, "consistency": "session"},
                headers={**HOST, SESSION: token},
            )
            assert r.status_code == 200, r.text
            assert r.json()["value"] == f"hello-{i}"
            assert r.json()["served_by"] == reader


# --------------------------------------------------------------------------- partition


def test_partition_eventual_both_sides_strong_503_on_the_cut_side_then_converge(
    planet: tuple[dict[str, Any], Path],
) -> None:
    info, state = planet
    urls = _urls(info)
    names = list(urls)
    cut, other = names[2], names[1]
    edgefn("net", "partition", cut, "--json", state_dir=state)
    try:
        with httpx.Client(timeout=20) as c:
            for side in (cut, other):
                w = c.put(
                    f"{urls[side]}/put", params={"key": f"part-{side}"}, content=side, headers=HOST
                )
                assert w.status_code == 200, w.text
                r = c.get(f"{urls[side]}/get", params={"key": f"part-{side}"}, headers=HOST)
                assert r.json()["value"] == side
            strong_cut = c.post(f"{urls[cut]}/incr", params={"key": "part-strong"}, headers=HOST)
            assert strong_cut.status_code == 503
            assert strong_cut.json()["error"] == "consistency_unavailable"
            strong_other = c.post(
                f"{urls[other]}/incr", params={"key": "part-strong"}, headers=HOST
            )
            assert strong_other.status_code == 200, strong_other.text
            # The cut side has not seen the other side's write yet.
            seen = c.get(f"{urls[cut]}/get", params={"key": f"part-{other}"}, headers=HOST)
            assert seen.json()["value"] is None
    finally:
        edgefn("net", "heal", "--json", state_dir=state)
    internal = list(internal_urls(info).values())
    states = wait_for(lambda: _converged(internal, state), timeout_s=60, what="convergence")
    assert check_convergence({s["location"]: _items(s) for s in states}) == []
    items = _items(states[0])
    assert items[f"part-{cut}"].value == cut.encode()
    assert items[f"part-{other}"].value == other.encode()


# --------------------------------------------------------------------------- checkers


class _Recorder:
    """Clients of the real planet; records HistOp (session level) and LinOp (strong) histories."""

    def __init__(self, urls: dict[str, str], state_dir: Path) -> None:
        self.urls = urls  # internal listeners
        self.state_dir = state_dir
        self.ops: list[HistOp] = []
        self.lin: list[LinOp] = []
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.t0 = time.monotonic()

    def ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    def session_client(self, session: str, locations: list[str], steps: int) -> None:
        token, index = "", 0
        with internal_client(self.state_dir, timeout=8) as c:
            for step in range(steps):
                loc = locations[step % len(locations)]
                key = f"h{step % 3}"
                write = step % 2 == 0
                value = f"{session}-{step}".encode()
                url = f"{self.urls[loc]}/_edgefn/kv/counts/{key}"
                params = {"consistency": "session", "session": token}
                try:
                    if write:
                        r = c.put(url, params=params, content=value)
                    else:
                        r = c.get(url, params=params)
                except httpx.HTTPError:
                    self._add(
                        HistOp(
                            session,
                            index,
                            "put" if write else "get",
                            key,
                            False,
                            indeterminate=write,
                            location=loc,
                        )
                    )
                    index += 1
                    continue
                body = r.json()
                ok = r.status_code == 200
                stamp = tuple(body["stamp"]) if ok and body.get("stamp") else None
                if ok:
                    token = body["session"] or token
                got = value if write else (body.get("value") or "").encode() or None
                self._add(
                    HistOp(
                        session,
                        index,
                        "put" if write else "get",
                        key,
                        ok,
                        stamp=stamp,  # type: ignore[arg-type]
                        value=got if ok else None,
                        location=loc,
                    )
                )
                index += 1

    def strong_client(self, client: str, location: str, steps: int) -> None:
        url = f"{self.urls[location]}/_edgefn/kv/counts/lin"
        with internal_client(self.state_dir, timeout=8) as c:
            for _ in range(steps):
                start = self.ms()
                try:
                    got = c.get(url, params={"consistency": "strong"})
                except httpx.HTTPError:
                    continue  # a read that failed has no effect: leave it out
                if got.status_code != 200:
                    continue
                body = got.json()
                value = body["value"].encode() if body["value"] is not None else None
                self._lin(
                    LinOp(
                        next(self.ids),
                        client,
                        "get",
                        "lin",
                        start,
                        self.ms(),
                        "ok",
                        value,
                        body["revision"],
                    )
                )
                new = f"{client}-{start}".encode()
                start = self.ms()
                params = {"consistency": "strong", "if_revision": str(body["revision"])}
                try:
                    r = c.put(url, params=params, content=new)
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code == 200:
                    op = LinOp(
                        next(self.ids),
                        client,
                        "put",
                        "lin",
                        start,
                        self.ms(),
                        "ok",
                        new,
                        r.json()["revision"],
                        body["revision"],
                    )
                elif r is not None and r.status_code == 409:
                    op = LinOp(
                        next(self.ids),
                        client,
                        "put",
                        "lin",
                        start,
                        self.ms(),
                        "conflict",
                        new,
                        r.json()["revision"],
                        body["revision"],
                    )
                else:  # 503 or no answer: may or may not have happened at the home
                    op = LinOp(
                        next(self.ids),
                        client,
                        "put",
                        "lin",
                        start,
                        None,
                        "unknown",
                        new,
                        0,
                        body["revision"],
                    )
                self._lin(op)

    def _add(self, op: HistOp) -> None:
        with self.lock:
            self.ops.append(op)

    def _lin(self, op: LinOp) -> None:
        with self.lock:
            self.lin.append(op)


def test_checkers_pass_on_histories_recorded_through_partition_heal_and_kill(
    planet: tuple[dict[str, Any], Path],
) -> None:
    """Session and strong clients run while a location is cut off and healed and another is
    killed (SIGKILL) and revived; then lincheck, session, convergence and no-lost-writes pass."""
    info, state = planet
    urls = internal_urls(info)
    names = list(urls)
    rec = _Recorder(urls, state)
    pairs = [names[0:2], names[2:4], [names[4], names[1]], [names[3], names[0]]]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(rec.session_client, f"s{i}", locs, 40) for i, locs in enumerate(pairs)
        ]
        futures += [pool.submit(rec.strong_client, f"c{i}", names[i], 12) for i in range(4)]
        edgefn("net", "partition", names[3], "--json", state_dir=state)
        time.sleep(2.0)  # fault schedule, not a wait for a condition: the cut lasts 2 s
        edgefn("net", "heal", "--json", state_dir=state)
        edgefn("net", "kill", names[4], state_dir=state)
        time.sleep(1.0)  # likewise: location down for 1 s
        edgefn("net", "revive", names[4], state_dir=state)
        for f in futures:
            f.result()
    states = wait_for(
        lambda: _converged(list(urls.values()), state), timeout_s=90, what="convergence"
    )
    contents = {s["location"]: _items(s) for s in states}
    assert check_convergence(contents) == []
    assert check_no_lost_writes(rec.ops, contents[names[0]]) == []
    assert check_sessions(rec.ops) == []
    assert sum(op.ok for op in rec.ops) >= len(rec.ops) // 2, "most session ops should succeed"
    result = check_linearizable(rec.lin)
    assert result.ok, result.reason
    assert sum(op.outcome == "ok" and op.kind == "put" for op in rec.lin) >= 4


# --------------------------------------------------------------------------- CLI


def test_cli_kv_put_get_list_delete_and_errors(planet: tuple[dict[str, Any], Path]) -> None:
    info, state = planet
    names = list(_urls(info))
    put = edgefn(
        "kv",
        "put",
        "counts",
        "cli-key",
        "v1",
        "--at",
        names[1],
        "--consistency",
        "session",
        "--json",
        state_dir=state,
    )
    assert put["location"] == names[1]
    got = edgefn(
        "kv",
        "get",
        "counts",
        "cli-key",
        "--at",
        names[3],
        "--consistency",
        "session",
        "--session",
        put["session"],
        "--json",
        state_dir=state,
    )
    assert got["value"] == "v1"
    listed = edgefn(
        "kv", "list", "counts", "--prefix", "cli-", "--at", names[1], "--json", state_dir=state
    )
    assert [k["name"] for k in listed["keys"]] == ["cli-key"]
    strong = edgefn(
        "kv",
        "put",
        "counts",
        "cli-strong",
        "a",
        "--consistency",
        "strong",
        "--if-revision",
        "0",
        "--json",
        state_dir=state,
    )
    again = edgefn(
        "kv",
        "put",
        "counts",
        "cli-strong",
        "b",
        "--consistency",
        "strong",
        "--if-revision",
        "0",
        state_dir=state,
        check=False,
    )
    assert again.returncode == 2
    assert "conflict" in again.stderr
    assert "revision" in again.stderr
    assert strong["revision"] >= 1
    deleted = edgefn(
        "kv", "delete", "counts", "cli-key", "--at", names[1], "--json", state_dir=state
    )
    assert deleted["key"] == "cli-key"
    gone = edgefn("kv", "get", "counts", "cli-key", "--at", names[1], "--json", state_dir=state)
    assert gone["value"] is None
    bad = edgefn("kv", "get", "counts", "k", "--consistency", "bogus", state_dir=state, check=False)
    assert bad.returncode == 2
    assert "unknown consistency" in bad.stderr
    nowhere = edgefn("kv", "get", "counts", "k", "--at", "nowhere", state_dir=state, check=False)
    assert nowhere.returncode == 2
    assert "unknown location" in nowhere.stderr
    badns = edgefn("kv", "get", "no.such", "k", state_dir=state, check=False)
    assert badns.returncode == 2
    assert "not a valid name" in badns.stderr
