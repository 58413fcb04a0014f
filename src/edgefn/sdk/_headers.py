"""Case-insensitive, multi-value HTTP headers.

Names are stored lower-cased with their values in arrival order, so a header sent twice keeps both
values (``get_all``) while ``get`` joins them with ``", "`` as the Fetch standard does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Union

HeadersInit = Union["Headers", Mapping[str, str], Iterable[tuple[str, str]], None]


class Headers:
    """Case-insensitive multi-value header map (like the Fetch API's ``Headers``)."""

    __slots__ = ("_items",)

    def __init__(self, init: HeadersInit = None) -> None:
        self._items: list[tuple[str, str]] = []
        if init is None:
            return
        if isinstance(init, Headers):
            self._items = list(init._items)
            return
        pairs = init.items() if isinstance(init, Mapping) else init
        for name, value in pairs:
            self.append(name, value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """All values of ``name`` joined by ``", "``, or ``default`` when absent."""
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        key = name.lower()
        return [v for k, v in self._items if k == key]

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with ``value``."""
        self.delete(name)
        self.append(name, value)

    def append(self, name: str, value: str) -> None:
        """Add one more value for ``name``."""
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"header name and value must be str, got {name!r}: {value!r}")
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"header {name!r} contains a line break")
        self._items.append((name.lower(), value))

    def delete(self, name: str) -> None:
        """Remove every value of ``name``."""
        key = name.lower()
        self._items = [(k, v) for k, v in self._items if k != key]

    def items(self) -> list[tuple[str, str]]:
        """(name, value) pairs with lower-case names, one per value."""
        return list(self._items)

    def keys(self) -> list[str]:
        """Distinct names, lower-case, in first-seen order."""
        return list(dict.fromkeys(k for k, _ in self._items))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k == name.lower() for k, _ in self._items)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        self.delete(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and sorted(self._items) == sorted(other._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items)))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
