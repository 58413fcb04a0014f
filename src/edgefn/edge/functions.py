"""The node's function table: which function a request is for, and which version serves it.

A request names its function by Host header (``<name>.localhost``, or ``<name>.<anything>`` when the
first label is a known function) or by a manifest route (``host/path-glob``, the longest pattern
wins). During a staged rollout a function has several versions with weights; the version is picked
by a seeded weighted choice per request. Swapping in a new set of versions is one dict assignment,
so requests already running finish on the version they started with.
"""

from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass

from edgefn.bundle import Manifest
from edgefn.runtime.sandbox import LoadSpec


@dataclass(frozen=True, slots=True)
class ActiveVersion:
    version: str
    weight: float
    spec: LoadSpec
    manifest: Manifest


@dataclass(frozen=True, slots=True)
class ActiveFunction:
    name: str
    versions: tuple[ActiveVersion, ...]

    def pick(self, rng: random.Random) -> ActiveVersion:
        if len(self.versions) == 1:
            return self.versions[0]
        x = rng.random() * sum(v.weight for v in self.versions)
        for v in self.versions:
            x -= v.weight
            if x < 0:
                return v
        return self.versions[-1]


class FunctionTable:
    """Names → active versions, plus the route patterns of their manifests."""

    def __init__(self, *, default: str | None = None) -> None:
        self.functions: dict[str, ActiveFunction] = {}
        self._routes: list[tuple[str, str, str]] = []  # (host glob, path glob, function)
        # `edgefn dev` serves one function; requests whose Host names none go to it.
        self.default = default

    def activate(self, fn: ActiveFunction) -> list[str]:
        """Install ``fn``; return the keys of versions no longer active (to retire)."""
        old = self.functions.get(fn.name)
        self.functions[fn.name] = fn
        self._rebuild_routes()
        keep = {v.spec.key for v in fn.versions}
        return [v.spec.key for v in old.versions if v.spec.key not in keep] if old else []

    def remove(self, name: str) -> list[str]:
        old = self.functions.pop(name, None)
        self._rebuild_routes()
        return [v.spec.key for v in old.versions] if old else []

    def _rebuild_routes(self) -> None:
        routes = []
        for fn in self.functions.values():
            for route in fn.versions[0].manifest.routes:
                host, _, path = route.pattern.partition("/")
                routes.append((host.lower(), "/" + path if path else "/*", fn.name))
        routes.sort(key=lambda r: -(len(r[0]) + len(r[1])))
        self._routes = routes

    def resolve(self, host: str, path: str) -> ActiveFunction | None:
        host = host.split(":", 1)[0].lower()
        for host_glob, path_glob, name in self._routes:
            if fnmatch.fnmatchcase(host, host_glob) and fnmatch.fnmatchcase(path, path_glob):
                return self.functions.get(name)
        first = host.split(".", 1)[0]
        found = self.functions.get(first)
        if found is None and self.default is not None:
            return self.functions.get(self.default)
        return found
