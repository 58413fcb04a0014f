"""Thermal throttling of one location: how hot it is, and how much work it should still take.

:class:`ThermalThrottle` is a pure machine fed the location's temperature (the hottest sensor, or
the emulated value of ``edgefn net heat``). It answers a :class:`ThermalState`:

* **hot**: at or above ``soft_c`` (and until the temperature falls below ``soft_c -
  hysteresis_c``, so a location near the threshold does not flap). A hot location says so in its
  load report, and every ingress adds ``RoutingConfig.hot_penalty_ms`` to its score: traffic
  moves to cooler neighbours that are close enough, before anything fails;
* **capacity**: the factor its admission limit is multiplied by: 1.0 up to ``soft_c``, falling
  linearly to ``min_factor`` at ``hard_c`` and staying there above it. The location still serves
  what it admits (never 0: a planet where every location is hot keeps serving), and its report's
  lower limit makes peers predict a longer queue there too.

No temperature (a host without sensors, nothing emulated) is "not hot, full capacity": the
platform never throttles on a reading it does not have.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefn.routing._errors import RoutingConfigError

__all__ = ["ThermalConfig", "ThermalState", "ThermalThrottle"]


@dataclass(frozen=True, slots=True)
class ThermalConfig:
    soft_c: float = 80.0
    hard_c: float = 95.0
    hysteresis_c: float = 3.0
    min_factor: float = 0.25

    def __post_init__(self) -> None:
        if not self.soft_c < self.hard_c:
            raise RoutingConfigError(
                f"thermal soft_c {self.soft_c} must be below hard_c {self.hard_c}",
                key="[thermal]",
                hint="for example soft_c = 80, hard_c = 95",
            )
        if not 0.0 < self.min_factor <= 1.0 or self.hysteresis_c < 0:
            raise RoutingConfigError(
                "thermal min_factor must be in (0, 1] and hysteresis_c >= 0",
                key="[thermal]",
                hint="for example min_factor = 0.25, hysteresis_c = 3",
            )


@dataclass(frozen=True, slots=True)
class ThermalState:
    celsius: float | None
    hot: bool
    capacity: float


class ThermalThrottle:
    """Temperature in, :class:`ThermalState` out (see the module docstring)."""

    def __init__(self, config: ThermalConfig | None = None) -> None:
        self.config = config or ThermalConfig()
        self._hot = False
        self.state = ThermalState(None, False, 1.0)

    def update(self, celsius: float | None) -> ThermalState:
        cfg = self.config
        if celsius is None:
            self._hot = False
            self.state = ThermalState(None, False, 1.0)
            return self.state
        if celsius >= cfg.soft_c:
            self._hot = True
        elif celsius < cfg.soft_c - cfg.hysteresis_c:
            self._hot = False
        if celsius <= cfg.soft_c:
            capacity = 1.0
        elif celsius >= cfg.hard_c:
            capacity = cfg.min_factor
        else:
            span = (celsius - cfg.soft_c) / (cfg.hard_c - cfg.soft_c)
            capacity = 1.0 - span * (1.0 - cfg.min_factor)
        self.state = ThermalState(celsius, self._hot, round(capacity, 4))
        return self.state
