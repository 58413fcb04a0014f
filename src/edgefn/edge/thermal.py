"""A node's temperature: the hottest of the host's thermal zones, or an emulated reading.

``read_zones`` reads ``/sys/class/thermal/thermal_zone*/temp`` (millidegrees; at most
``MAX_ZONES``). :class:`ThermalSensor` answers the temperature the traffic driver throttles on
(:mod:`edgefn.routing.thermal`): the emulated value when one is set (``edgefn net heat LOC C`` on
the local planet, through the node's signed internal listener), else the hottest real zone, else
``None`` (the host has no sensors: nothing is throttled). :class:`ThermalGovernor` carries the
pure throttle's answer out: the admission limit's capacity factor, and the state the load
beacon's ``hot`` comes from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from edgefn.routing.thermal import ThermalState, ThermalThrottle

__all__ = ["EMULATED_MAX_C", "MAX_ZONES", "ThermalGovernor", "ThermalSensor", "read_zones"]

MAX_ZONES = 16
EMULATED_MAX_C = 150.0  # an emulated reading outside [-50, 150] °C is refused


def read_zones(sysfs: Path = Path("/sys")) -> dict[str, float]:
    """``{"thermal_zone0:x86_pkg_temp": 47.5, ...}`` in °C; empty without readable zones."""
    out: dict[str, float] = {}
    for zone in sorted((sysfs / "class" / "thermal").glob("thermal_zone*"))[:MAX_ZONES]:
        try:
            temp = (zone / "temp").read_text().strip()
        except OSError:
            continue
        try:
            kind = (zone / "type").read_text().strip() or zone.name
        except OSError:
            kind = zone.name
        if temp.lstrip("-").isdigit():
            out[f"{zone.name}:{kind}"[:64]] = int(temp) / 1000.0
    return out


class ThermalSensor:
    """The temperature to throttle on (see the module docstring)."""

    def __init__(self, sysfs: Path = Path("/sys")) -> None:
        self.sysfs = sysfs
        self.emulated: float | None = None

    def emulate(self, celsius: float | None) -> None:
        """Set (or with None clear) an emulated reading; ValueError outside the plausible range."""
        if celsius is not None and not (
            math.isfinite(celsius) and -50.0 <= celsius <= EMULATED_MAX_C
        ):
            raise ValueError(f"{celsius!r} °C is not a plausible temperature (-50 to 150)")
        self.emulated = celsius

    def celsius(self) -> float | None:
        if self.emulated is not None:
            return self.emulated
        zones = read_zones(self.sysfs)
        return max(zones.values()) if zones else None


class ThermalGovernor:
    """Sensor → :class:`~edgefn.routing.thermal.ThermalThrottle` → the admission capacity."""

    def __init__(
        self,
        sensor: ThermalSensor,
        throttle: ThermalThrottle,
        set_capacity: Callable[[float], None],
    ) -> None:
        self.sensor = sensor
        self.throttle = throttle
        self._set_capacity = set_capacity

    @property
    def state(self) -> ThermalState:
        return self.throttle.state

    def apply(self) -> ThermalState:
        """Read the temperature and apply the throttle's answer (every report interval)."""
        state = self.throttle.update(self.sensor.celsius())
        self._set_capacity(state.capacity)
        return state

    def heat(self, celsius: float | None) -> ThermalState:
        """Emulate the temperature (None: back to the sensors), applied at once."""
        self.sensor.emulate(celsius)
        return self.apply()
