"""Typed access to one TOML table, raising ScenarioError that names the file and dotted key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgefn.errors import ScenarioError

__all__ = ["Table"]

_MISSING = object()


class Table:
    """A TOML table at ``prefix`` in file ``path``."""

    def __init__(self, data: dict[str, Any], path: str, prefix: str) -> None:
        self.data = data
        self.path = path
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str, hint: str) -> ScenarioError:
        return ScenarioError(message, path=self.path, key=self.key(name), hint=hint)

    def check_keys(self, allowed: set[str]) -> None:
        for name in self.data:
            if name not in allowed:
                raise self.error(name, "unknown key", f"allowed here: {', '.join(sorted(allowed))}")

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            raise self.error(name, "missing required key", f"add {name} = ...")
        return default

    def table(self, name: str) -> Table:
        t = self.opt_table(name)
        if t is None:
            raise self.error(name, "missing required table", f"add a [{self.key(name)}] table")
        return t

    def opt_table(self, name: str) -> Table | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(name, "expected a table", f"write [{self.key(name)}]")
        return Table(value, self.path, self.key(name))

    def array(self, name: str) -> list[Table]:
        value = self.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(name, "expected an array of tables", f"write [[{self.key(name)}]]")
        return [Table(v, self.path, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

    def number(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {value!r}", f"write {name} = 1.5")
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}", "raise the value")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be <= {maximum}, got {value}", "lower the value")
        return float(value)

    def integer(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {value!r}", f"write {name} = 10")
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}", "raise the value")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be <= {maximum}, got {value}", "lower the value")
        return value

    def string(self, name: str, default: Any = _MISSING) -> str:
        value = self.raw(name, default)
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {value!r}", f'write {name} = "..."')
        return value

    def boolean(self, name: str, default: Any = _MISSING) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {value!r}", f"write {name} = true")
        return value

    def choice(self, name: str, options: Iterable[str], default: Any = _MISSING) -> str:
        value = self.string(name, default)
        opts = tuple(options)
        if value not in opts:
            raise self.error(name, f"unknown value {value!r}", f"use one of: {', '.join(opts)}")
        return value
