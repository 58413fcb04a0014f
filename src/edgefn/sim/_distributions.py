"""Service-time, cold-start and inter-arrival distributions, parametrised by mean and SCV.

Every distribution is given by its mean (ms) and squared coefficient of variation
(SCV = variance / mean²), the two moments that the Pollaczek–Khinchine and Allen–Cunneen
formulas use, so a scenario can change the shape without changing the load:

* ``exponential``: SCV 1 (the ``scv`` field is ignored).
* ``deterministic``: SCV 0.
* ``hyperexponential``: two-phase H2 with balanced means (Whitt 1982): with
  ``p = (1 + sqrt((scv - 1) / (scv + 1))) / 2`` the phases have rates ``2p/mean`` and
  ``2(1-p)/mean``. Needs SCV >= 1.
* ``lognormal``: ``sigma² = ln(1 + scv)``, ``mu = ln(mean) - sigma²/2``.

Sampling is vectorised: ``sample(rng, n)`` returns a float64 array of ``n`` draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DISTRIBUTIONS", "Distribution"]

DISTRIBUTIONS = ("deterministic", "exponential", "hyperexponential", "lognormal")


@dataclass(frozen=True, slots=True)
class Distribution:
    """A positive random duration with the given ``mean_ms`` and ``scv``."""

    kind: str
    mean_ms: float
    scv: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {self.kind!r}; use one of {DISTRIBUTIONS}")
        if not self.mean_ms > 0.0:
            raise ValueError(f"mean_ms must be > 0, got {self.mean_ms}")
        if self.kind == "hyperexponential" and self.scv < 1.0:
            raise ValueError(f"hyperexponential needs scv >= 1, got {self.scv}")
        if self.kind == "lognormal" and self.scv <= 0.0:
            raise ValueError(f"lognormal needs scv > 0, got {self.scv}")

    @property
    def true_scv(self) -> float:
        """The SCV the samples actually have (1 for exponential, 0 for deterministic)."""
        if self.kind == "exponential":
            return 1.0
        if self.kind == "deterministic":
            return 0.0
        return self.scv

    @property
    def second_moment_ms2(self) -> float:
        """E[S²] = mean² (1 + SCV)."""
        return self.mean_ms * self.mean_ms * (1.0 + self.true_scv)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws, in ms."""
        m = self.mean_ms
        if self.kind == "exponential":
            return rng.exponential(m, n)
        if self.kind == "deterministic":
            return np.full(n, m)
        if self.kind == "lognormal":
            s2 = math.log1p(self.scv)
            return rng.lognormal(math.log(m) - s2 / 2.0, math.sqrt(s2), n)
        p = 0.5 * (1.0 + math.sqrt((self.scv - 1.0) / (self.scv + 1.0)))
        means = np.where(rng.random(n) < p, m / (2.0 * p), m / (2.0 * (1.0 - p)))
        return rng.exponential(1.0, n) * means
