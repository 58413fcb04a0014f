"""Vector clocks: a map origin -> counter, immutable, with compare, merge and dominates.

The KV uses them for three things, always with per-origin *write sequence numbers* as counters:
a replica's applied frontier (every write of origin ``o`` up to ``vc[o]`` is applied), a causal
write's dependencies, and the content of a session token. A missing origin counts as 0.

``compare`` returns one of ``BEFORE``, ``AFTER``, ``EQUAL``, ``CONCURRENT``. ``a.dominates(b)``
means ``a >= b`` entry-wise (so ``a`` covers everything ``b`` has seen).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping

__all__ = ["Order", "VClock"]


class Order(enum.Enum):
    """How two vector clocks relate."""

    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


class VClock(Mapping[str, int]):
    """An immutable vector clock. Zero entries are dropped so equal clocks compare equal."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        clean: dict[str, int] = {}
        for origin, counter in pairs:
            assert counter >= 0, (origin, counter)
            if counter:
                clean[origin] = max(counter, clean.get(origin, 0))
        self._items = dict(sorted(clean.items()))

    def __getitem__(self, origin: str) -> int:
        return self._items[origin]

    def get(self, origin: str, default: int = 0) -> int:  # type: ignore[override]
        return self._items.get(origin, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VClock):
            return self._items == other._items
        return NotImplemented

    def __repr__(self) -> str:
        return f"VClock({self._items!r})"

    def pairs(self) -> tuple[tuple[str, int], ...]:
        """The entries as sorted ``(origin, counter)`` pairs (wire and storage form)."""
        return tuple(self._items.items())

    def with_counter(self, origin: str, counter: int) -> VClock:
        """A copy with ``origin`` raised to at least ``counter``."""
        return self.merge(VClock({origin: counter}))

    def increment(self, origin: str) -> VClock:
        """A copy with ``origin``'s counter plus one."""
        items = dict(self._items)
        items[origin] = items.get(origin, 0) + 1
        return VClock(items)

    def merge(self, other: Mapping[str, int]) -> VClock:
        """The entry-wise maximum (least upper bound)."""
        items = dict(self._items)
        for origin, counter in other.items():
            if counter > items.get(origin, 0):
                items[origin] = counter
        return VClock(items)

    def dominates(self, other: Mapping[str, int]) -> bool:
        """True if every entry of ``other`` is <= the same entry here."""
        return all(self._items.get(o, 0) >= c for o, c in other.items())

    def missing(self, other: Mapping[str, int]) -> VClock:
        """The entries of ``other`` this clock does not yet cover."""
        return VClock({o: c for o, c in other.items() if self._items.get(o, 0) < c})

    def compare(self, other: VClock) -> Order:
        """Causal order of ``self`` relative to ``other``."""
        ge = self.dominates(other)
        le = other.dominates(self)
        if ge and le:
            return Order.EQUAL
        if ge:
            return Order.AFTER
        if le:
            return Order.BEFORE
        return Order.CONCURRENT

    def total(self) -> int:
        """Sum of all counters (the number of events the clock accounts for)."""
        return sum(self._items.values())
