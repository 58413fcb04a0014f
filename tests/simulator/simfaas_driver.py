"""Run SimFaaS's ServerlessSimulator on parameter sets and print batch-means statistics as JSON.

Not a test module: test_simfaas.py runs this file with the Python of a separate virtual
environment where ``simfaas`` is installed (edgefn does not depend on it). Input: a JSON file
(argv[1]) with ``{"seed": int, "batches": int, "sets": [{rate_per_s, service_s, cold_s,
keep_alive_s, max_time_s, warmup_s, max_instances}]}``. Times are seconds, as SimFaaS uses.

SimFaaS's model: exponential warm service, cold service drawn from its own process, one request
per instance, the newest idle instance reused, an idle instance expiring after
``expiration_threshold``, rejection when ``maximum_concurrency`` instances run. The cold service
process here draws ``cold_s + Exp(service_s)``, edgefn's cold busy time. Both processes record
their draws, so the k-th cold (warm) draw is the response time of the k-th cold (warm) request,
whose arrival time is ``hist_times[idx + 1]`` for its index ``idx`` in ``hist_req_cold_idxs``
(SimFaaS records the index of the previous event). Time averages come from the piecewise-
constant ``hist_server_count`` / ``hist_server_idle_count`` histories.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
from simfaas.ServerlessSimulator import ServerlessSimulator
from simfaas.SimProcess import SimProcess


class Recorded(SimProcess):  # type: ignore[misc]
    """``offset_s + Exp(mean_s)``, remembering every draw."""

    def __init__(self, mean_s: float, offset_s: float) -> None:
        super().__init__()
        self.mean_s = mean_s
        self.offset_s = offset_s
        self.samples: list[float] = []

    def generate_trace(self) -> float:
        x = float(self.offset_s + np.random.exponential(self.mean_s))
        self.samples.append(x)
        return x


def _batch_means(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "se": float(x.std(ddof=1) / np.sqrt(len(x))), "n": len(x)}


def run_set(p: dict[str, Any], batches: int) -> dict[str, Any]:
    warm = Recorded(p["service_s"], 0.0)
    cold = Recorded(p["service_s"], p["cold_s"])
    sim = ServerlessSimulator(
        arrival_rate=p["rate_per_s"],
        warm_service_process=warm,
        cold_service_process=cold,
        expiration_threshold=p["keep_alive_s"],
        max_time=p["max_time_s"],
        maximum_concurrency=p["max_instances"] or 10**9,
    )
    sim.generate_trace()
    times = np.asarray(sim.hist_times)
    w0, w1 = float(p["warmup_s"]), float(p["max_time_s"])
    edges = np.linspace(w0, w1, batches + 1)
    span = (w1 - w0) / batches

    def per_batch_mean(counts: list[int]) -> np.ndarray:
        c = np.asarray(counts, dtype=float)
        area = np.concatenate([[0.0], np.cumsum(c * np.diff(times))])
        return np.asarray(np.diff(np.interp(edges, times, area)) / span)

    def arrivals(idxs: list[int]) -> np.ndarray:
        return np.asarray(times[np.asarray(idxs, dtype=np.int64) + 1])

    cold_t = arrivals(sim.hist_req_cold_idxs)
    warm_t = arrivals(sim.hist_req_warm_idxs)
    rej_t = arrivals(sim.hist_req_rej_idxs)
    assert len(cold_t) == len(cold.samples), (len(cold_t), len(cold.samples))
    assert len(warm_t) == len(warm.samples), (len(warm_t), len(warm.samples))

    def bins(t: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        keep = (t >= w0) & (t < w1)
        b = np.minimum(((t[keep] - w0) // span).astype(np.int64), batches - 1)
        w = None if weights is None else weights[keep]
        return np.bincount(b, weights=w, minlength=batches).astype(float)

    n_cold, n_warm, n_rej = bins(cold_t), bins(warm_t), bins(rej_t)
    resp = bins(cold_t, np.asarray(cold.samples)) + bins(warm_t, np.asarray(warm.samples))
    total = np.maximum(n_cold + n_warm + n_rej, 1.0)
    served = np.maximum(n_cold + n_warm, 1.0)
    inst = per_batch_mean(sim.hist_server_count)
    idle = per_batch_mean(sim.hist_server_idle_count)
    return {
        "cold_start_probability": _batch_means(n_cold / total),
        "rejection_probability": _batch_means(n_rej / total),
        "instances_mean": _batch_means(inst),
        "idle_mean": _batch_means(idle),
        "response_s_mean": _batch_means(resp / served),
        "requests": int((n_cold + n_warm + n_rej).sum()),
        "simfaas_result": {k: float(v) for k, v in sim.get_result_dict().items()},
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    np.random.seed(spec["seed"])
    out = [run_set(p, spec["batches"]) for p in spec["sets"]]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
