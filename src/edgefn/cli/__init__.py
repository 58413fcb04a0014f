"""The ``edgefn`` command line. Commands only: each turns arguments into calls of the public API."""

from __future__ import annotations

__all__: list[str] = []
