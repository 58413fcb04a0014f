"""Planner input files: ``functions.toml`` and ``demand.csv``.

``functions.toml``::

    budget_per_hour = 50.0            # optional, dollars per hour
    [weights]                          # optional; see edgefn.placement.Weights
    latency = 1.0
    cost = 1000.0
    carbon = 0.0
    [[functions]]
    name = "api"
    replicas_min = 2                   # optional, default 1
    sla_ms = 80                        # optional
    cpu_ms_per_request = 5             # optional, default 5
    memory_mb = 128                    # optional, default 128
    availability_min = 0.999           # optional, default none
    [economics]                        # optional; `edgefn plan --objective value` only
    deploy_cost_per_hour = 0.01        # see edgefn.placement._value.Economics for every key
    value_per_million = 0.5

``demand.csv`` has a header ``client,function,rps``. ``client`` is a city name, a PoP code or
``lat,lon`` (quoted); ``*`` spreads the rate over all built-in cities by population. Errors are
:class:`PlanInputError` naming the file and the key or line.
"""

from __future__ import annotations

import csv
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefn.errors import PlanInputError, UsageError
from edgefn.placement._model import Client, FunctionSpec, Weights
from edgefn.placement._value import ECONOMICS_KEYS, Economics
from edgefn.world import cities, parse_client_location

__all__ = ["FunctionsFile", "read_demand", "read_functions"]

_MAX_ROWS = 1_000_000
_FUNCTION_KEYS = {
    "name", "replicas_min", "sla_ms", "cpu_ms_per_request", "memory_mb", "availability_min",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FunctionsFile:
    functions: tuple[FunctionSpec, ...]
    weights: Weights
    budget_per_hour: float | None
    economics: Economics = field(default_factory=Economics)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanInputError("file not found", path=str(path), hint="check the path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PlanInputError(f"cannot read: {err}", path=str(path)) from None


def _number(path: str, key: str, value: Any, low: float, high: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise PlanInputError(f"must be a number in [{low:g}, {high:g}], got {value!r}",
                             path=path, key=key)  # fmt: skip
    return float(value)


def read_functions(path: str | Path) -> FunctionsFile:
    p = Path(path)
    try:
        data = tomllib.loads(_read_text(p))
    except tomllib.TOMLDecodeError as err:
        raise PlanInputError(f"not valid TOML: {err}", path=str(p)) from None
    raw = data.get("functions")
    if not isinstance(raw, list) or not raw:
        raise PlanInputError("no [[functions]] entries", path=str(p), key="functions",
                             hint='add [[functions]] tables with at least name = "..."')  # fmt: skip
    specs = tuple(_function(str(p), f"functions[{k}]", e) for k, e in enumerate(raw))
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PlanInputError(f"duplicate function name {dup[0]!r}", path=str(p), key="functions")
    w = data.get("weights", {})
    if not isinstance(w, dict) or set(w) - {"latency", "cost", "carbon"}:
        raise PlanInputError("[weights] takes latency, cost and carbon", path=str(p), key="weights")
    weights = Weights(**{k: _number(str(p), f"weights.{k}", v, 0, 1e12) for k, v in w.items()})
    budget = data.get("budget_per_hour")
    if budget is not None:
        budget = _number(str(p), "budget_per_hour", budget, 0, 1e12)
    return FunctionsFile(specs, weights, budget, _economics(str(p), data.get("economics", {})))


def _economics(path: str, table: Any) -> Economics:
    if not isinstance(table, dict):
        raise PlanInputError("must be a table", path=path, key="economics")
    unknown = sorted(set(table) - ECONOMICS_KEYS)
    if unknown:
        raise PlanInputError(f"unknown key {unknown[0]!r}", path=path,
                             key=f"economics.{unknown[0]}",
                             hint=f"allowed: {', '.join(sorted(ECONOMICS_KEYS))}")  # fmt: skip
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "max_replicas":
            if not isinstance(value, int) or isinstance(value, bool):
                raise PlanInputError(f"must be a whole number, got {value!r}", path=path,
                                     key="economics.max_replicas")  # fmt: skip
            values[key] = value
        else:
            values[key] = _number(path, f"economics.{key}", value, 0, 1e12)
    try:
        return Economics(**values)
    except PlanInputError as err:  # raised without the file: say which file
        message = err.message.removeprefix(f"{err.key}: ")
        raise PlanInputError(message, path=path, key=err.key, hint=err.hint) from None


def _function(path: str, key: str, entry: Any) -> FunctionSpec:
    if not isinstance(entry, dict):
        raise PlanInputError("must be a table", path=path, key=key)
    unknown = sorted(set(entry) - _FUNCTION_KEYS)
    if unknown:
        raise PlanInputError(f"unknown key {unknown[0]!r}", path=path, key=f"{key}.{unknown[0]}",
                             hint=f"allowed: {', '.join(sorted(_FUNCTION_KEYS))}")  # fmt: skip
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise PlanInputError("needs a non-empty string name", path=path, key=f"{key}.name")
    r = entry.get("replicas_min", 1)
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= 1000:
        raise PlanInputError(f"must be a whole number from 1 to 1000, got {r!r}",
                             path=path, key=f"{key}.replicas_min")  # fmt: skip
    sla = entry.get("sla_ms")
    return FunctionSpec(
        name=name,
        replicas_min=r,
        sla_ms=None if sla is None else _number(path, f"{key}.sla_ms", sla, 0, 1e6),
        cpu_ms_per_request=_number(
            path, f"{key}.cpu_ms_per_request", entry.get("cpu_ms_per_request", 5.0), 0, 1e6
        ),
        memory_mb=_number(path, f"{key}.memory_mb", entry.get("memory_mb", 128.0), 0, 1e7),
        availability_min=_number(
            path, f"{key}.availability_min", entry.get("availability_min", 0.0), 0, 0.999999999
        ),
    )


def read_demand(
    path: str | Path, functions: Sequence[FunctionSpec]
) -> tuple[tuple[Client, ...], dict[tuple[str, str], float]]:
    """Client regions and ``demand[(client_id, function)] = rps`` from a CSV file."""
    p = Path(path)
    rows = list(csv.reader(_read_text(p).splitlines()))
    if not rows or [c.strip() for c in rows[0]] != ["client", "function", "rps"]:
        raise PlanInputError("the header must be client,function,rps", path=str(p), key="line 1")
    if len(rows) > _MAX_ROWS:
        raise PlanInputError(f"more than {_MAX_ROWS} rows", path=str(p))
    known = {f.name for f in functions}
    clients: dict[str, Client] = {}
    demand: dict[tuple[str, str], float] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise PlanInputError(f"expected 3 fields, got {len(row)}", path=str(p),
                                 key=f"line {line}", hint='quote "lat,lon" clients')  # fmt: skip
        client, fn, rate = (c.strip() for c in row)
        if fn not in known:
            raise PlanInputError(f"unknown function {fn!r}", path=str(p), key=f"line {line}",
                                 hint="declare it in the functions file")  # fmt: skip
        try:
            rps = float(rate)
        except ValueError:
            rps = -1.0
        if not (rps >= 0 and math.isfinite(rps)):
            raise PlanInputError(f"rps must be a number >= 0, got {rate!r}", path=str(p),
                                 key=f"line {line}")  # fmt: skip
        for c, share in _expand(str(p), line, client):
            clients.setdefault(c.id, c)
            demand[(c.id, fn)] = demand.get((c.id, fn), 0.0) + rps * share
    if not demand:
        raise PlanInputError("no demand rows", path=str(p), hint="add client,function,rps rows")
    return tuple(clients.values()), demand


def _expand(path: str, line: int, client: str) -> list[tuple[Client, float]]:
    if client == "*":
        total = sum(c.population for c in cities())
        return [(Client(c.name, c.lat, c.lon, c.utc_offset_h), c.population / total)
                for c in cities()]  # fmt: skip
    try:
        point = parse_client_location(client)
    except UsageError as err:
        raise PlanInputError(err.message, path=path, key=f"line {line}", hint=err.hint) from None
    city = next((c for c in cities() if c.name.lower() == client.lower()), None)
    if city is not None:
        return [(Client(city.name, city.lat, city.lon, city.utc_offset_h), 1.0)]
    return [(Client(client, point.lat, point.lon), 1.0)]
