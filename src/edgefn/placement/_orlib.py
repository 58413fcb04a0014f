"""Readers for Beasley's OR-Library facility-location files.

Two formats, told apart by the first line:

- capacitated facility location (``cap41``..``cap134``, ``capa``/``capb``/``capc``): ``m n``, then m
  lines ``capacity fixed_cost``, then for each customer its demand followed by m costs (the cost of
  serving all of its demand from each facility). In ``capa/capb/capc`` the capacity is the literal
  word ``capacity``, to be replaced by a value the caller chooses.
- p-median (``pmed1``..``pmed40``): ``n_vertices n_edges p``, then edges ``i j cost`` (1-based,
  undirected). Distances are all-pairs shortest paths; when an edge appears twice the last
  occurrence wins (Beasley's note). Every vertex is both a customer (demand 1) and a candidate.

Both become a :class:`FacilityProblem`. Errors are :class:`PlanInputError` naming the file and
the position (token number and what was expected there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from edgefn.errors import PlanInputError
from edgefn.placement._facility import FacilityProblem

__all__ = ["parse_orlib", "read_orlib"]

_MAX_SIZE = 2_000


class _Tokens:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.items = text.split()
        self.pos = 0

    def number(self, what: str, *, capacity: float | None = None) -> float:
        if self.pos >= len(self.items):
            raise PlanInputError(
                f"file ends early: expected {what} at token {self.pos + 1}",
                path=self.path,
                key=what,
                hint="the file is truncated or is not an OR-Library cap/pmed instance",
            )
        tok = self.items[self.pos]
        self.pos += 1
        if tok.lower() == "capacity":
            if capacity is None:
                raise PlanInputError(
                    "capacities are the word 'capacity' (a capa/capb/capc instance)",
                    path=self.path,
                    key=what,
                    hint="pass --capacity C (for example 8000) to set every facility's capacity",
                )
            return capacity
        try:
            return float(tok)
        except ValueError:
            raise PlanInputError(
                f"expected a number for {what} at token {self.pos}, got {tok!r}",
                path=self.path,
                key=what,
            ) from None

    def count(self, what: str) -> int:
        value = self.number(what)
        if value != int(value) or not 1 <= value <= _MAX_SIZE:
            raise PlanInputError(
                f"{what} must be a whole number from 1 to {_MAX_SIZE}, got {value:g}",
                path=self.path,
                key=what,
            )
        return int(value)


def read_orlib(path: str | Path, *, capacity: float | None = None) -> FacilityProblem:
    """Read a file from disk; see :func:`parse_orlib`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii")
    except FileNotFoundError:
        raise PlanInputError("file not found", path=str(p), hint="check the path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PlanInputError(f"cannot read: {err}", path=str(p)) from None
    return parse_orlib(text, path=str(p), capacity=capacity)


def parse_orlib(
    text: str, *, path: str = "<text>", capacity: float | None = None
) -> FacilityProblem:
    """Parse a cap* or pmed* instance (format detected from the first line)."""
    first = text.lstrip().split("\n", 1)[0].split()
    if len(first) == 3:
        return _parse_pmed(_Tokens(path, text))
    if len(first) == 2:
        return _parse_cap(_Tokens(path, text), capacity)
    raise PlanInputError(
        f"first line has {len(first)} numbers; expected 2 (cap: m n) or 3 (pmed: n edges p)",
        path=path,
        key="line 1",
        hint="give an OR-Library capacitated (cap*) or p-median (pmed*) file",
    )


def _parse_cap(tok: _Tokens, capacity: float | None) -> FacilityProblem:
    m = tok.count("m (facilities)")
    n = tok.count("n (customers)")
    caps: list[float] = []
    fixed: list[float] = []
    for i in range(m):
        caps.append(tok.number(f"capacity of facility {i + 1}", capacity=capacity))
        fixed.append(tok.number(f"fixed cost of facility {i + 1}"))
    demand: list[float] = []
    cost = [[0.0] * n for _ in range(m)]
    for j in range(n):
        demand.append(tok.number(f"demand of customer {j + 1}"))
        for i in range(m):
            cost[i][j] = tok.number(f"cost of customer {j + 1} at facility {i + 1}")
    if tok.pos != len(tok.items):
        raise PlanInputError(
            f"{len(tok.items) - tok.pos} unexpected numbers after the last customer",
            path=tok.path,
            key="end of file",
            hint="check m and n on the first line",
        )
    return FacilityProblem(
        tuple(fixed), tuple(demand), tuple(tuple(r) for r in cost), tuple(caps), None
    )


def _parse_pmed(tok: _Tokens) -> FacilityProblem:
    n = tok.count("number of vertices")
    e = int(tok.number("number of edges"))
    p = tok.count("p")
    if p > n:
        raise PlanInputError(f"p = {p} exceeds the {n} vertices", path=tok.path, key="p")
    edges: dict[tuple[int, int], float] = {}
    for k in range(e):
        a = int(tok.number(f"edge {k + 1} endpoint"))
        b = int(tok.number(f"edge {k + 1} endpoint"))
        w = tok.number(f"edge {k + 1} cost")
        if not (1 <= a <= n and 1 <= b <= n):
            raise PlanInputError(
                f"edge {k + 1} joins {a} and {b}, outside vertices 1..{n}",
                path=tok.path,
                key=f"edge {k + 1}",
            )
        edges[(min(a, b) - 1, max(a, b) - 1)] = w  # the last occurrence wins
    rows = [a for a, _ in edges] + [b for _, b in edges]
    cols = [b for _, b in edges] + [a for a, _ in edges]
    weights = list(edges.values()) * 2
    graph = coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    dist = shortest_path(graph, directed=False)
    if not np.all(np.isfinite(dist)):
        raise PlanInputError("the graph is not connected", path=tok.path, key="edges")
    cost = tuple(tuple(float(v) for v in row) for row in dist)
    return FacilityProblem((0.0,) * n, (1.0,) * n, cost, None, p)
