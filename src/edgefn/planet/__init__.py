"""The local planet and the process roles: supervisor, core/region/node roles, anycast entry,
bundle distribution, and the node's desired-state agent."""

from __future__ import annotations

__all__ = ["CLOCK_SKEW_MAX_MS"]

# The furthest a node's KV clock may be set off (`edgefn node --clock-skew-ms`, `edgefn net skew`):
# half the HLC's drift limit (60 s), so a skewed node's writes are still accepted by its peers.
CLOCK_SKEW_MAX_MS = 30_000
