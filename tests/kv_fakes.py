"""Test helper: a stand-in for EdgeNode as the KV service sees it (function table, ready, log)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from edgefn.bundle.manifest import KVNamespace


def fake_node(namespaces: tuple[str, ...], *, ready: bool = True) -> Any:
    """A node whose one function binds ``namespaces`` (none: no function); ``.events`` collects
    what the service logs."""
    manifest = SimpleNamespace(kv_namespaces=tuple(KVNamespace(n.upper(), n) for n in namespaces))
    function = SimpleNamespace(versions=[SimpleNamespace(manifest=manifest)])
    events: list[dict[str, Any]] = []
    log = SimpleNamespace(emit=lambda kind, **fields: events.append({"kind": kind, **fields}))
    return SimpleNamespace(
        table=SimpleNamespace(functions={"counter": function} if namespaces else {}),
        ready=ready,
        log=log,
        events=events,
    )
