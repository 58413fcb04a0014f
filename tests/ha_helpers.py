"""Test helpers for a clustered core: find its JetStream leaders, and load it with strong writes.

The load is ``examples/counter`` on every location: ``POST /incr?key=K`` (a strong CAS loop) and,
for the linearizability check, strong ``PUT /put`` of unique values and strong ``GET /get`` on
another key. Each answer is classified the way a client must read it:

- ``ok`` (200): acknowledged;
- ``unavailable`` (503 ``consistency_unavailable``, or 409 after too much contention): nothing
  was done;
- ``unknown`` (503 ``outcome_unknown``, any other error, or no answer): it may have applied.

Threads run the load; ``thread_init`` runs first in each thread (the multi-host test enters a
network namespace there, which applies to the calling thread only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from edgefn.state.lincheck import LinOp

HOST = {"host": "counter.localhost"}
HOME_STREAM = "KV_edgefn-kvhome"


def classify(response: httpx.Response | None) -> str:
    """``ok``, ``unavailable`` (nothing done) or ``unknown`` (maybe done); see the docstring."""
    if response is None:
        return "unknown"
    if response.status_code == 200:
        return "ok"
    if response.status_code == 409:
        return "unavailable"
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    return "unavailable" if error == "consistency_unavailable" else "unknown"


def jetstream_leaders(
    get_json: Callable[[str], dict[str, Any] | None], monitor_urls: dict[str, str]
) -> tuple[str | None, dict[str, str]]:
    """(meta leader, stream name -> leader) as the core servers' ``/jsz`` report them."""
    meta: str | None = None
    streams: dict[str, str] = {}
    for url in monitor_urls.values():
        data = get_json(f"{url}/jsz?accounts=true&streams=true")
        if not data:
            continue
        meta = meta or (data.get("meta_cluster") or {}).get("leader")
        for account in data.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                leader = (stream.get("cluster") or {}).get("leader")
                if leader:
                    streams.setdefault(stream["name"], leader)
    return meta, streams


@dataclass
class StrongLoad:
    """Strong increments (and, with ``lin_key``, puts and gets) from every URL, in threads."""

    urls: list[str]
    key: str
    lin_key: str = ""
    # The register of the linearizability check changes every lin_window_s (one key per
    # window): the checker splits the history by key, and short sub-histories keep its search
    # small even with many unknown outcomes, while all clients still share each window's key.
    lin_window_s: float = 5.0
    thread_init: Callable[[], None] = lambda: None
    timeout_s: float = 20.0
    outcomes: dict[str, int] = field(default_factory=lambda: {"ok": 0, "unavailable": 0})
    acked_counts: list[int] = field(default_factory=list)
    lin_ops: list[LinOp] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.outcomes.setdefault("unknown", 0)

    def start(self) -> None:
        for i, url in enumerate(self.urls):
            t = threading.Thread(target=self._run, args=(f"c{i}", url), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 10)
            assert not t.is_alive(), "a load thread did not stop"

    def acked(self) -> int:
        with self._lock:
            return self.outcomes["ok"]

    def _ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    def _run(self, client: str, url: str) -> None:
        self.thread_init()
        with httpx.Client(timeout=self.timeout_s, trust_env=False) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                self._increment(http, url)
                if self.lin_key:
                    self._lin_step(http, client, url, n)

    def _post(self, http: httpx.Client, url: str, **kw: Any) -> httpx.Response | None:
        try:
            return http.request(url=url, headers=HOST, **kw)
        except httpx.HTTPError:
            return None

    def _increment(self, http: httpx.Client, url: str) -> None:
        r = self._post(http, f"{url}/incr", method="POST", params={"key": self.key})
        kind = classify(r)
        with self._lock:
            self.outcomes[kind] += 1
            if kind == "ok":
                assert r is not None
                self.acked_counts.append(int(r.json()["count"]))

    def _lin_step(self, http: httpx.Client, client: str, url: str, n: int) -> None:
        """A strong put of a unique value, then a strong get, recorded for the lincheck."""
        value = f"{client}-{n}"
        start = self._ms()
        key = f"{self.lin_key}-{int(start / 1000 // self.lin_window_s)}"
        r = self._post(
            http,
            f"{url}/put",
            method="PUT",
            params={"key": key, "consistency": "strong"},
            content=value,
        )
        kind = classify(r)
        if kind != "unavailable":
            revision = int(r.json()["revision"]) if kind == "ok" and r is not None else 0
            self._record(client, key, "put", start, kind, value.encode(), revision)
        start = self._ms()
        r = self._post(
            http, f"{url}/get", method="GET", params={"key": key, "consistency": "strong"}
        )
        if classify(r) == "ok":
            assert r is not None
            body = r.json()
            got = body.get("value")
            self._record(
                client,
                key,
                "get",
                start,
                "ok",
                None if got is None else str(got).encode(),
                int(body.get("revision") or 0),
            )

    def _record(
        self,
        client: str,
        key: str,
        kind: str,
        start: int,
        outcome: str,
        value: bytes | None,
        rev: int,
    ) -> None:
        with self._lock:
            self.lin_ops.append(
                LinOp(
                    op_id=len(self.lin_ops),
                    client=client,
                    kind=kind,
                    key=key,
                    invoke_ms=start,
                    return_ms=None if outcome == "unknown" else self._ms(),
                    outcome=outcome,
                    value=value,
                    revision=rev,
                )
            )


def check_counter(load: StrongLoad, final: int) -> None:
    """No acknowledged increment lost, none invented: acked <= final <= acked + unknown."""
    acked, unknown = load.outcomes["ok"], load.outcomes["unknown"]
    assert final >= acked, f"acknowledged increments lost: final {final} < acked {acked}"
    assert final <= acked + unknown, f"final {final} > acked {acked} + unknown {unknown}"
    counts = sorted(load.acked_counts)
    assert len(set(counts)) == len(counts), "one count was handed out twice"
