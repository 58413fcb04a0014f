"""``--report DIR``: PNG plots (matplotlib, Agg backend) and an index.html that shows them.

Plots: latency CDF by client region, cold-start rate over time, utilisation per location on a
longitude/latitude map (queue scenarios without coordinates get a bar chart instead).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from edgefn.sim._runner import SimulationResult

__all__ = ["write_report"]


def write_report(result: SimulationResult, directory: str | Path) -> list[Path]:
    """Write the plots and index.html into ``directory``; return the files written."""
    matplotlib.use("Agg")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = [
        _cdf(plt, result, out / "latency_cdf_by_region.png"),
        _cold_timeline(plt, result, out / "cold_start_rate.png"),
        _utilisation(plt, result, out / "utilization_map.png"),
    ]
    files.append(_html(result, files, out / "index.html"))
    return files


def _cdf(plt: Any, r: SimulationResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    for region, tally in r.region_tallies.items():
        x, y = tally.response.cdf_points()
        keep = (y > 0.0) & (y < 1.0)
        if keep.any():
            ax.plot(x[keep], y[keep], label=f"{region} (n={tally.n})")
    ax.set_xscale("log")
    ax.set_xlabel("response time (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Response-time CDF by region")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _cold_timeline(plt: Any, r: SimulationResult, path: Path) -> Path:
    tl = r["cold_start_timeline"]
    req = np.array(tl["requests"], dtype=float)
    cold = np.array(tl["cold"], dtype=float)
    hours = np.arange(len(req)) * float(tl["bin_s"]) / 3600.0
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(hours, np.divide(cold, req, out=np.zeros_like(req), where=req > 0))
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("cold-start fraction")
    ax.set_title("Cold-start rate over time")
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _utilisation(plt: Any, r: SimulationResult, path: Path) -> Path:
    locs = list(r["locations"].values())
    util = np.array([float(loc.get("utilization", 0.0)) for loc in locs])
    fig, ax = plt.subplots(figsize=(10, 5))
    if locs and "lat" in locs[0]:
        sc = ax.scatter(
            [loc["lon"] for loc in locs],
            [loc["lat"] for loc in locs],
            c=util,
            s=10 + 200 * util / max(float(util.max()), 1e-9),
            cmap="viridis",
        )
        fig.colorbar(sc, ax=ax, label="utilisation")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-60, 75)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    else:
        ax.bar([str(loc["name"]) for loc in locs], util)
        ax.set_ylabel("utilisation")
    ax.set_title("Utilisation by location")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _html(r: SimulationResult, images: list[Path], path: Path) -> Path:
    head = {k: v for k, v in r.items() if k not in ("locations", "cold_start_timeline")}
    imgs = "\n".join(f'<h2>{html.escape(p.stem)}</h2><img src="{p.name}">' for p in images)
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>edgefn simulate: {html.escape(str(r['scenario']))}</title></head><body>"
        f"<h1>Scenario {html.escape(str(r['scenario']))}</h1>"
        f"<pre>{html.escape(json.dumps(head, indent=2))}</pre>{imgs}</body></html>\n",
        encoding="utf-8",
    )
    return path
