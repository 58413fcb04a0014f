"""Fit the latency model to measured round-trip times (developer tooling, never run at run time).

Usage::

    python -m edgefn.world.fit SERVERS_CSV PINGS_CSV

``SERVERS_CSV`` and ``PINGS_CSV`` are WonderProxy's ``servers-*.csv``
(``id,...,latitude,longitude``) and ``pings-*-grouped.csv``
(``source,destination,min,avg,max,mdev`` in ms, keyed by server id).
The model is ``rtt_ms = c0 + c1 * d + c2 * sqrt(d)`` with ``d`` the great-circle distance in km and
``c0`` fixed to the in-metro round trip. ``c1`` and ``c2`` minimise the squared *relative* error
against the average RTT, so short and long pairs weigh alike (an absolute fit is dominated by the
long intercontinental pairs). The sqrt term absorbs the detours that short paths take through
exchange points. The script prints the constants to paste into ``_latency.py`` and the model's
error on the measured pairs; the design record 0002 quotes that output.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgefn.world._geo import GeoPoint, haversine_km
from edgefn.world._latency import LOCAL_RTT_MS, rtt_from_distance_ms

__all__ = ["ErrorReport", "MeasuredPair", "error_report", "fit_constants", "load_pairs", "main"]


@dataclass(frozen=True, slots=True)
class MeasuredPair:
    distance_km: float
    min_ms: float
    avg_ms: float


@dataclass(frozen=True, slots=True)
class ErrorReport:
    pairs: int
    median_abs_pct: float
    p90_abs_pct: float
    median_signed_pct: float


def load_pairs(servers_csv: str, pings_csv: str) -> list[MeasuredPair]:
    """Join pings to server coordinates; drop self-pairs and pairs with unknown servers."""
    points: dict[str, GeoPoint] = {}
    with open(servers_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            points[row["id"]] = GeoPoint(float(row["latitude"]), float(row["longitude"]))
    pairs: list[MeasuredPair] = []
    with open(pings_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            a, b = points.get(row["source"]), points.get(row["destination"])
            if a is None or b is None or row["source"] == row["destination"]:
                continue
            pairs.append(MeasuredPair(haversine_km(a, b), float(row["min"]), float(row["avg"])))
    return pairs


def fit_constants(pairs: Sequence[MeasuredPair]) -> tuple[float, float]:
    """Least squares on relative error: minimise sum(((c0 + c1 d + c2 sqrt d) - avg) / avg)^2."""
    d = np.array([p.distance_km for p in pairs])
    y = np.array([p.avg_ms for p in pairs]) - LOCAL_RTT_MS
    w = 1.0 / np.array([p.avg_ms for p in pairs])
    design = np.column_stack([d, np.sqrt(d)]) * w[:, None]
    coef, *_ = np.linalg.lstsq(design, y * w, rcond=None)
    return float(coef[0]), float(coef[1])


def error_report(
    pairs: Sequence[MeasuredPair], c1: float | None = None, c2: float | None = None
) -> ErrorReport:
    """Absolute percentage error of the model (shipped constants unless c1, c2 are given)."""
    assert pairs, "no measured pairs"
    errs: list[float] = []
    signed: list[float] = []
    for p in pairs:
        if c1 is None or c2 is None:
            model = rtt_from_distance_ms(p.distance_km)
        else:
            model = LOCAL_RTT_MS + c1 * p.distance_km + c2 * math.sqrt(p.distance_km)
        signed.append(100.0 * (model - p.avg_ms) / p.avg_ms)
        errs.append(abs(signed[-1]))
    errs.sort()
    signed.sort()
    return ErrorReport(
        pairs=len(pairs),
        median_abs_pct=errs[len(errs) // 2],
        p90_abs_pct=errs[min(len(errs) - 1, int(0.9 * len(errs)))],
        median_signed_pct=signed[len(signed) // 2],
    )


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m edgefn.world.fit SERVERS_CSV PINGS_CSV\n")
        return 2
    pairs = load_pairs(argv[0], argv[1])
    c1, c2 = fit_constants(pairs)
    print(f"pairs={len(pairs)}")
    print(f"_C1_MS_PER_KM = {c1:.7f}")
    print(f"_C2_MS_PER_SQRT_KM = {c2:.6f}")
    print(f"fitted: {error_report(pairs, c1, c2)}")
    print(f"shipped: {error_report(pairs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
