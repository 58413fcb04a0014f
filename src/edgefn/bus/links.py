"""The link table: which named links join which endpoints, and which are cut (pure; no I/O).

Every inter-tier connection of a planet ("core"↔"hub-eu", "hub-eu"↔"loc-fra") is a named link
between two endpoint names, with a round-trip time. The table answers the operator's questions as
data, and the :class:`~edgefn.bus.link_group.LinkEmulatorGroup` driver carries out its answers on
real TCP proxies:

- ``Partition(endpoints)`` cuts every link with exactly one end inside ``endpoints``; links inside
  the set and links outside it stay up, so each side keeps talking among itself. Partitions add up:
  a second partition cuts more links and heals none.
- ``Heal()`` heals every cut link.
- ``SetDelay(a, b, rtt_ms)`` changes the RTT of the link between ``a`` and ``b`` (either order).

``handle(event)`` returns one instruction per link whose state changes (``CutLink``, ``HealLink``,
``SetLinkRtt``), sorted by link name so that runs are reproducible. At most one link joins a pair of
endpoints, links are never self-loops, and the table holds at most ``max_links`` links.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgefn.bus.errors import LinkTableError

__all__ = [
    "AddLink",
    "CutLink",
    "Heal",
    "HealLink",
    "LinkEvent",
    "LinkInstruction",
    "LinkState",
    "LinkTable",
    "LinkTableStatistics",
    "Partition",
    "SetDelay",
    "SetLinkRtt",
]

MAX_RTT_MS = 60_000.0


@dataclass(frozen=True, slots=True)
class AddLink:
    name: str
    a: str
    b: str
    rtt_ms: float


@dataclass(frozen=True, slots=True)
class Partition:
    endpoints: frozenset[str]


@dataclass(frozen=True, slots=True)
class Heal:
    pass


@dataclass(frozen=True, slots=True)
class SetDelay:
    a: str
    b: str
    rtt_ms: float


LinkEvent = AddLink | Partition | Heal | SetDelay


@dataclass(frozen=True, slots=True)
class CutLink:
    name: str


@dataclass(frozen=True, slots=True)
class HealLink:
    name: str


@dataclass(frozen=True, slots=True)
class SetLinkRtt:
    name: str
    rtt_ms: float


LinkInstruction = CutLink | HealLink | SetLinkRtt


@dataclass(frozen=True, slots=True)
class LinkState:
    """One link as the table sees it."""

    name: str
    a: str
    b: str
    rtt_ms: float
    cut: bool

    def joins(self, x: str, y: str) -> bool:
        return {self.a, self.b} == {x, y}


@dataclass(frozen=True, slots=True)
class LinkTableStatistics:
    links: int
    endpoints: int
    links_cut: int
    partitions_total: int
    heals_total: int


def _check_rtt(rtt_ms: float, where: str) -> None:
    if not 0.0 <= rtt_ms <= MAX_RTT_MS:
        raise LinkTableError(
            f"{where}: rtt_ms={rtt_ms} is out of range",
            hint=f"give a round-trip time between 0 and {MAX_RTT_MS:g} ms",
        )


class LinkTable:
    """Named links between endpoints. Change it only through :meth:`handle`."""

    def __init__(self, *, max_links: int = 10_000) -> None:
        assert max_links > 0
        self._max_links = max_links
        self._links: dict[str, LinkState] = {}
        self._partitions_total = 0
        self._heals_total = 0

    # -- queries ---------------------------------------------------------------------------------

    def links(self) -> list[LinkState]:
        return [self._links[name] for name in sorted(self._links)]

    def link(self, name: str) -> LinkState:
        try:
            return self._links[name]
        except KeyError:
            raise LinkTableError(
                f"unknown link {name!r}", hint=f"known links: {', '.join(sorted(self._links))}"
            ) from None

    def endpoints(self) -> set[str]:
        return {e for link in self._links.values() for e in (link.a, link.b)}

    def link_between(self, a: str, b: str) -> LinkState:
        self._require_endpoints([a, b])
        for link in self._links.values():
            if link.joins(a, b):
                return link
        raise LinkTableError(
            f"no link joins {a!r} and {b!r}",
            hint="links join adjacent tiers (core-hub, hub-location); list them with GET /links",
        )

    def statistics(self) -> LinkTableStatistics:
        return LinkTableStatistics(
            links=len(self._links),
            endpoints=len(self.endpoints()),
            links_cut=sum(1 for link in self._links.values() if link.cut),
            partitions_total=self._partitions_total,
            heals_total=self._heals_total,
        )

    def check_invariants(self) -> None:
        assert len(self._links) <= self._max_links
        pairs: set[frozenset[str]] = set()
        for name, link in self._links.items():
            assert name == link.name
            assert link.a != link.b, f"self-loop {name}"
            assert 0.0 <= link.rtt_ms <= MAX_RTT_MS
            pair = frozenset((link.a, link.b))
            assert pair not in pairs, f"two links join {sorted(pair)}"
            pairs.add(pair)

    # -- convenience wrappers --------------------------------------------------------------------

    def add(self, name: str, a: str, b: str, *, rtt_ms: float) -> None:
        self.handle(AddLink(name=name, a=a, b=b, rtt_ms=rtt_ms))

    def partition(self, endpoints: Iterable[str]) -> set[str]:
        """Cut the links that leave ``endpoints``; return the names of all links that do."""
        chosen = frozenset(endpoints)
        self.handle(Partition(chosen))
        return {
            link.name for link in self._links.values() if (link.a in chosen) != (link.b in chosen)
        }

    def heal(self) -> set[str]:
        """Heal every cut link; return the names of the links healed."""
        return {i.name for i in self.handle(Heal())}

    def delay(self, a: str, b: str, rtt_ms: float) -> str:
        """Set the RTT of the link between ``a`` and ``b``; return its name."""
        self.handle(SetDelay(a=a, b=b, rtt_ms=rtt_ms))
        return self.link_between(a, b).name

    # -- the machine -----------------------------------------------------------------------------

    def handle(self, event: LinkEvent) -> list[LinkInstruction]:
        if isinstance(event, AddLink):
            return self._add(event)
        if isinstance(event, Partition):
            return self._partition(event)
        if isinstance(event, Heal):
            return self._heal()
        return self._set_delay(event)

    def _add(self, event: AddLink) -> list[LinkInstruction]:
        where = f"link {event.name!r}"
        if event.name in self._links:
            raise LinkTableError(f"{where} already exists", hint="give each link a unique name")
        if event.a == event.b:
            raise LinkTableError(f"{where} joins {event.a!r} to itself", hint="name two endpoints")
        if not event.name or not event.a or not event.b:
            raise LinkTableError(f"{where}: empty name or endpoint", hint="names are non-empty")
        if len(self._links) >= self._max_links:
            raise LinkTableError(
                f"{where}: the table is full ({self._max_links} links)",
                hint="raise max_links or emulate fewer links",
            )
        for link in self._links.values():
            if link.joins(event.a, event.b):
                raise LinkTableError(
                    f"{where}: {link.name!r} already joins {event.a!r} and {event.b!r}",
                    hint="one link per pair of endpoints",
                )
        _check_rtt(event.rtt_ms, where)
        self._links[event.name] = LinkState(event.name, event.a, event.b, event.rtt_ms, cut=False)
        return []

    def _partition(self, event: Partition) -> list[LinkInstruction]:
        if not event.endpoints:
            raise LinkTableError("partition of no endpoints", hint="name at least one endpoint")
        self._require_endpoints(event.endpoints)
        self._partitions_total += 1
        out: list[LinkInstruction] = []
        for name in sorted(self._links):
            link = self._links[name]
            crosses = (link.a in event.endpoints) != (link.b in event.endpoints)
            if crosses and not link.cut:
                self._links[name] = _replace(link, cut=True)
                out.append(CutLink(name))
        return out

    def _heal(self) -> list[LinkInstruction]:
        self._heals_total += 1
        out: list[LinkInstruction] = []
        for name in sorted(self._links):
            link = self._links[name]
            if link.cut:
                self._links[name] = _replace(link, cut=False)
                out.append(HealLink(name))
        return out

    def _set_delay(self, event: SetDelay) -> list[LinkInstruction]:
        link = self.link_between(event.a, event.b)
        _check_rtt(event.rtt_ms, f"link {link.name!r}")
        if link.rtt_ms == event.rtt_ms:
            return []
        self._links[link.name] = LinkState(link.name, link.a, link.b, event.rtt_ms, link.cut)
        return [SetLinkRtt(link.name, event.rtt_ms)]

    def _require_endpoints(self, names: Iterable[str]) -> None:
        known = self.endpoints()
        unknown = sorted(set(names) - known)
        if unknown:
            raise LinkTableError(
                f"unknown endpoint(s) {', '.join(map(repr, unknown))}",
                hint=f"known endpoints: {', '.join(sorted(known))}",
            )


def _replace(link: LinkState, *, cut: bool) -> LinkState:
    return LinkState(link.name, link.a, link.b, link.rtt_ms, cut)
