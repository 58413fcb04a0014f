"""The routing package's own error class.

Routing machines are configured from ``edgefn.toml`` (``[limits]``, ``[placement]``) and from the
planet configuration (``[routing]``). A bad value there is a :class:`~edgefn.errors.ConfigError`;
this subclass marks the ones the routing package found, so callers can tell them apart from
manifest parse errors. Per-request bad input (malformed forwarding headers, unknown request ids) is
never an exception: it is stripped or counted, because a request from outside must not be able to
crash a node.
"""

from __future__ import annotations

import math

from edgefn.errors import ConfigError

__all__ = ["RoutingConfigError", "require_finite", "require_positive"]


class RoutingConfigError(ConfigError):
    """A routing, health, rate-limit or admission setting is out of range."""


def require_positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise :class:`RoutingConfigError` naming ``key`` unless ``value`` is finite and > 0 (or >=
    0)."""
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise RoutingConfigError(
            f"must be a finite number {bound}, got {value!r}",
            key=key,
            hint=f"set {key} to a finite value {bound}",
        )


def require_finite(key: str, value: float, *, low: float, high: float) -> None:
    """Raise :class:`RoutingConfigError` naming ``key`` unless ``low <= value <= high``."""
    if not (math.isfinite(value) and low <= value <= high):
        raise RoutingConfigError(
            f"must be between {low} and {high}, got {value!r}",
            key=key,
            hint=f"set {key} to a value in [{low}, {high}]",
        )
