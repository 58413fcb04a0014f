"""Shared output helpers for commands: JSON printing, error reporting, tables.

Heavy imports (rich) happen inside the functions so ``edgefn --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer

from edgefn.errors import EdgefnError


def emit_json(obj: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, *, hint: str = "", code: int = 2) -> NoReturn:
    """Print an error (and what to do) on stderr and exit with ``code``."""
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"  hint: {hint}\n")
    raise typer.Exit(code)


def fail_from(err: EdgefnError, *, code: int = 2) -> NoReturn:
    """Report an :class:`EdgefnError` the way :func:`fail` does."""
    fail(err.message, hint=err.hint, code=code)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console().print(table)


def utc_ms(ms: object) -> str:
    """A millisecond timestamp as readable UTC (``-`` for none), for tables."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "-"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
