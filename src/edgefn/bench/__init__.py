"""Benchmarks behind ``edgefn bench``: each prints JSON and compares side by side in one run."""

from __future__ import annotations

__all__: list[str] = []
