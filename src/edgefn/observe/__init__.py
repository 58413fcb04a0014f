"""Observability: Prometheus metrics and structured JSON logs."""

from __future__ import annotations

from edgefn.observe.log_limits import LogLimiter, LogLimits, RotatingFile
from edgefn.observe.logs import JsonLog
from edgefn.observe.metrics import NodeMetrics

__all__ = ["JsonLog", "LogLimiter", "LogLimits", "NodeMetrics", "RotatingFile"]
