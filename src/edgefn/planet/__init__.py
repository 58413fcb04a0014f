"""The local planet and the process roles: supervisor, core/region/node roles, anycast entry,
bundle distribution, and the node's desired-state agent."""

from __future__ import annotations

__all__: list[str] = []
