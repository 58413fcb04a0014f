"""edgefn's instance pools against SimFaaS (Mahmoudi & Khazaei, PyPI ``simfaas`` 0.2.2).

SimFaaS is not a dependency of edgefn: ``make simfaas`` (run by ``make test``) installs it into a
separate virtual environment, ``.venv-simfaas`` (or ``$EDGEFN_SIMFAAS_PYTHON``), and the test runs
``simfaas_driver.py`` there; nothing is installed while the tests run.

Five parameter sets of SimFaaS's scale-per-request model (exponential service, cold busy time =
cold start + service, fixed expiration threshold, one with a concurrency cap that rejects), each
about 20,000 requests in both simulators. Compared: cold-start probability, rejection
probability, time-averaged instances and idle instances, mean response time.

Tolerance: both runs give batch means (20 batches after a 2% warm-up), hence standard errors
``se_e`` and ``se_s``; the two runs are independent, so their difference has standard error
``sqrt(se_e² + se_s²)``. A metric agrees when ``|edgefn - simfaas| <= q · sqrt(se_e² + se_s²)``
with ``q`` the Student-t quantile on 19 degrees of freedom at a family-wise level of 1%
(Bonferroni over the 25 comparisons: two-sided 0.01/25 each, q ≈ 4.2). Metrics whose value
is exactly 0 in both (no rejections without a cap) must be 0 in both. Each check alone is
loose (about ±8% of a cold-start probability), so the test also sums the squared standardised
differences over all non-degenerate comparisons: without bias that is about χ² with as many
degrees of freedom, and it must stay under its 99th percentile — a small bias repeated across
sets shows up there. Seeds are fixed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from scipy.special import chdtri, stdtrit

from edgefn.sim import parse_scenario, simulate

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

SIMFAAS = "simfaas==0.2.2"
BATCHES = 20
COMPARISONS = 25
DRIVER = Path(__file__).with_name("simfaas_driver.py")

# (rate/s, mean service s, cold start s, keep-alive s, simulated s, max instances or 0)
SETS = [
    (1.0, 1.0, 0.5, 5.0, 20_000.0, 0),
    (5.0, 0.5, 1.0, 2.0, 4_000.0, 0),
    (0.2, 2.0, 0.3, 10.0, 100_000.0, 0),
    (2.0, 1.0, 0.5, 3.0, 10_000.0, 3),
    (10.0, 0.2, 0.2, 0.5, 2_000.0, 0),
]


def _simfaas_python() -> Path:
    """Python of the separate SimFaaS environment ``make test`` builds (``make simfaas``)."""
    override = os.environ.get("EDGEFN_SIMFAAS_PYTHON")
    py = Path(override) if override else REPO / ".venv-simfaas" / "bin" / "python"
    if not py.exists():
        pytest.skip(f"no SimFaaS environment at {py}: run `make simfaas` (make test does)")
    return py


def _edgefn(rate: float, es: float, ec: float, t: float, dur: float, cap: int) -> dict[str, Any]:
    cold: dict[str, Any] = {
        "enabled": True,
        "distribution": "deterministic",
        "mean_ms": ec * 1000,
        "keep_alive_s": t,
        "instance_concurrency": 1,
    }
    if cap:
        cold["max_instances"] = cap
    doc = {
        "run": {"duration_s": dur, "warmup_s": dur / 50, "batches": BATCHES, "seed": 1},
        "locations": [{"name": "l"}],
        "workload": {"arrivals": "poisson", "rate_per_s": rate},
        "service": {"distribution": "exponential", "mean_ms": es * 1000},
        "cold_start": cold,
    }
    r = simulate(parse_scenario(doc), workers=1)
    t975 = float(stdtrit(BATCHES - 1, 0.975))

    def se(ci: dict[str, Any], scale: float = 1.0) -> dict[str, float]:
        return {"mean": float(ci["mean"]) * scale, "se": float(ci["half_width"]) * scale / t975}

    inst = r["instances"]["ci95"]
    return {
        "cold_start_probability": se(inst["cold_start_probability"]),
        "rejection_probability": se(inst["rejection_probability"]),
        "instances_mean": se(inst["mean"]),
        "idle_mean": se(inst["idle_mean"]),
        "response_s_mean": se(r["ci95"]["response_ms_mean"], 1e-3),
    }


def test_pools_match_simfaas(tmp_path: Path) -> None:
    py = _simfaas_python()
    spec = {
        "seed": 1,
        "batches": BATCHES,
        "sets": [
            {
                "rate_per_s": rate,
                "service_s": es,
                "cold_s": ec,
                "keep_alive_s": t,
                "max_time_s": dur,
                "warmup_s": dur / 50,
                "max_instances": cap,
            }
            for rate, es, ec, t, dur, cap in SETS
        ],
    }
    (tmp_path / "sets.json").write_text(json.dumps(spec), encoding="utf-8")
    res = subprocess.run(
        [str(py), str(DRIVER), str(tmp_path / "sets.json")],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = json.loads(res.stdout)
    q = float(stdtrit(BATCHES - 1, 1.0 - 0.01 / (2 * COMPARISONS)))
    report: list[str] = []
    bad: list[str] = []
    z2: list[float] = []
    for params, sf in zip(SETS, theirs, strict=True):
        ours = _edgefn(*params)
        for metric, e in ours.items():
            s = sf[metric]
            diff = abs(e["mean"] - s["mean"])
            tol = q * math.hypot(e["se"], s["se"])
            line = (
                f"{params} {metric}: edgefn {e['mean']:.4f} simfaas {s['mean']:.4f} tol {tol:.4f}"
            )
            report.append(line)
            if tol == 0.0 and diff == 0.0:
                continue
            z2.append((diff * q / tol) ** 2)
            if diff > tol:
                bad.append(line)
    limit = float(chdtri(len(z2), 0.01))
    report.append(f"sum of squared z: {sum(z2):.2f} over {len(z2)} (99th percentile {limit:.2f})")
    print("\n".join(report))
    assert not bad, "\n".join(bad)
    assert sum(z2) <= limit, report[-1]
