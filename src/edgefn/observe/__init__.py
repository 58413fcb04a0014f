"""Observability: Prometheus metrics and structured JSON logs."""

from __future__ import annotations

from edgefn.observe.logs import JsonLog
from edgefn.observe.metrics import NodeMetrics

__all__ = ["JsonLog", "NodeMetrics"]
