"""The routing package's surface: sorted, complete exports and pure imports only."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import edgefn.routing

SUBMODULES = [
    "admission",
    "failover",
    "hashing",
    "headers",
    "health",
    "internal_auth",
    "loadgen_plan",
    "local_limits",
    "nearest",
    "policy",
    "ratelimit",
    "suspicion",
]
FORBIDDEN = {
    "asyncio",
    "socket",
    "subprocess",
    "threading",
    "multiprocessing",
    "sqlite3",
    "time",
    "nats",
    "httpx",
    "uvicorn",
    "edgefn.edge",
    "edgefn.bus",
    "edgefn.planet",
    "edgefn.cli",
    "edgefn.observe",
}


def test_all_is_sorted_and_names_exist() -> None:
    names = edgefn.routing.__all__

    # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    def order(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=order)
    for name in names:
        assert hasattr(edgefn.routing, name), name


def test_every_public_name_of_the_submodules_is_exported() -> None:
    exported = set(edgefn.routing.__all__)
    for sub in SUBMODULES:
        module = importlib.import_module(f"edgefn.routing.{sub}")
        missing = {n for n in module.__all__ if not n.isupper()} - exported
        assert not missing, (sub, missing)


def test_modules_import_nothing_impure() -> None:
    root = Path(edgefn.routing.__file__).parent
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                hits = {f for f in FORBIDDEN if name == f or name.startswith(f + ".")}
                assert not hits, (path.name, name)
