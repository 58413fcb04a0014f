"""What a chaos run does, as data: the clients' operations and the nemesis' schedule, from a seed.

Everything here is pure (no I/O, no clock, no global random): the driver
(:mod:`edgefn.chaos.driver`) carries the plan out against a real planet and records what
happened. The same seed gives the same plan, so a failing run can be repeated.

Clients (Jepsen's "processes"). Each location runs three closed-loop clients:

- a **strong** client: ``get``, blind ``put`` and ``cas`` (put with ``if_revision``: the last
  revision this client saw of the key, or 0) on the namespace's home. Strong keys rotate with
  time like ``jepsen.independent``: during each ``key_period_ms`` every strong client works on
  the same few keys ``lin-<epoch>-<k>``, so clients contend while every key's history stays short
  enough for the linearizability search (its cost grows with concurrent unknown outcomes);
- a **session** client: one session whose token travels from operation to operation while the
  client roams over every location (``get``/``put`` at level ``session`` on keys ``ses-<k>``, which
  all session clients share, so they also read each other's writes);
- an **eventual** client, pinned to its location (``get``/``put`` on keys ``ev-<k>``).

Every written value is unique (``<client>:<n>``), so a read names the write it observed.
:class:`ClientPlan` hands out the next operation given the current time (time arrives as data).

Nemesis. :func:`plan_nemesis` lays out fault *episodes* between ``warmup_ms`` and
``duration_ms - cooldown_ms``: each episode starts one fault, sometimes a second one of another
kind inside it, holds them, ends them, then leaves the planet quiet for a while. Faults:

- ``partition``: cut every backbone link leaving some locations (``loc-<x>``) or one region's hub
  (``hub-<r>``, which cuts off the whole region); ended by ``heal``;
- ``kill``: SIGKILL a location's node (kept down); ended by ``revive``;
- ``slow``: raise one link's round-trip time (node↔hub or hub↔core); ended by ``restore``;
- ``skew``: restart a location's node with its KV clock off by ``skew_ms`` (either sign; the HLC's
  physical input, ``edgefn node --clock-skew-ms``); ended by ``unskew`` (restarted on true time).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "FAULTS",
    "LEVELS",
    "ChaosOptions",
    "ClientPlan",
    "ClientSpec",
    "NemesisStep",
    "PlannedOp",
    "plan_clients",
    "plan_nemesis",
]

FAULTS = ("partition", "kill", "slow", "skew")
LEVELS = ("strong", "session", "eventual")
_ENDINGS = {"partition": "heal", "kill": "revive", "slow": "restore", "skew": "unskew"}


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    """Everything that shapes a run besides the planet. Times in milliseconds of run time."""

    seed: int
    duration_ms: int
    faults: tuple[str, ...] = FAULTS
    warmup_ms: int = 2_000
    cooldown_ms: int = 2_000
    fault_ms: tuple[int, int] = (2_000, 6_000)
    quiet_ms: tuple[int, int] = (1_000, 4_000)
    overlap_probability: float = 0.3
    slow_rtt_ms: tuple[int, int] = (150, 900)
    skew_ms: tuple[int, int] = (2_000, 20_000)  # magnitude; the sign is drawn too
    think_ms: tuple[int, int] = (10, 60)
    key_period_ms: int = 6_000
    strong_keys: int = 2
    session_keys: int = 4
    eventual_keys: int = 12
    ops_per_client_max: int = 100_000
    key_prefix: str = ""  # keeps runs on one planet apart (a fresh planet needs none)

    def __post_init__(self) -> None:
        assert self.duration_ms > 0, self.duration_ms
        assert set(self.faults) <= set(FAULTS), self.faults
        assert 0 <= self.fault_ms[0] <= self.fault_ms[1], self.fault_ms
        assert 0 <= self.quiet_ms[0] <= self.quiet_ms[1], self.quiet_ms
        assert 0 < self.think_ms[0] <= self.think_ms[1], self.think_ms
        assert self.key_period_ms > 0, self.key_period_ms
        assert min(self.strong_keys, self.session_keys, self.eventual_keys) >= 1


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One client: its name, level and home location (a session client roams from there)."""

    name: str
    level: str
    location: str


@dataclass(frozen=True, slots=True)
class PlannedOp:
    """One operation a client is to perform next, after ``think_ms``.

    ``kind``: get, put or cas. ``location``: where to send it. ``value``: what a write writes.
    A cas takes its ``if_revision`` from what the client last saw (runtime data, the driver's).
    """

    client: str
    seq: int
    level: str
    kind: str
    key: str
    location: str
    value: str | None
    think_ms: int


@dataclass(slots=True)
class ClientPlan:
    """The seeded sequence of one client's operations. Change it only through :meth:`next_op`."""

    spec: ClientSpec
    locations: tuple[str, ...]
    options: ChaosOptions
    rng: random.Random
    seq: int = 0

    def next_op(self, now_ms: int) -> PlannedOp | None:
        """The next operation at run time ``now_ms``, or None once the run is over."""
        if now_ms >= self.options.duration_ms or self.seq >= self.options.ops_per_client_max:
            return None
        self.seq += 1
        kind, key, location = self._choose(now_ms)
        value = f"{self.spec.name}:{self.seq}" if kind != "get" else None
        think = self.rng.randint(*self.options.think_ms)
        return PlannedOp(
            self.spec.name, self.seq, self.spec.level, kind, key, location, value, think
        )

    def _choose(self, now_ms: int) -> tuple[str, str, str]:
        opts, rng, spec = self.options, self.rng, self.spec
        if spec.level == "strong":
            kind = rng.choices(("get", "put", "cas"), weights=(4, 1, 5))[0]
            epoch = now_ms // opts.key_period_ms
            key = f"{opts.key_prefix}lin-{epoch}-{rng.randrange(opts.strong_keys)}"
            return kind, key, spec.location
        kind = rng.choice(("get", "put"))
        if spec.level == "session":
            key = f"{opts.key_prefix}ses-{rng.randrange(opts.session_keys)}"
            return kind, key, rng.choice(self.locations)
        return kind, f"{opts.key_prefix}ev-{rng.randrange(opts.eventual_keys)}", spec.location


def plan_clients(options: ChaosOptions, locations: Sequence[str]) -> list[ClientPlan]:
    """One client per level per location, each with its own generator derived from the seed."""
    assert locations, "a planet has at least one location"
    plans = []
    for loc in locations:
        for level in LEVELS:
            spec = ClientSpec(f"{level}-{loc}", level, loc)
            rng = random.Random(f"{options.seed}/{spec.name}")
            plans.append(ClientPlan(spec, tuple(locations), options, rng))
    return plans


@dataclass(frozen=True, slots=True)
class NemesisStep:
    """One nemesis action at run time ``at_ms``.

    ``action``: partition, heal, kill, revive, slow, restore, skew or unskew. ``targets``:
    endpoints (partition), one location (kill/revive, skew/unskew) or a link's two endpoints
    (slow/restore). ``skew_ms``: the clock offset a ``skew`` restarts its node with.
    """

    at_ms: int
    action: str
    targets: tuple[str, ...]
    rtt_ms: float = 0.0
    episode: int = 0
    skew_ms: int = 0


@dataclass(frozen=True, slots=True)
class _Topology:
    locations: tuple[str, ...]
    regions: dict[str, str] = field(default_factory=dict)  # location -> region


def plan_nemesis(options: ChaosOptions, locations: Sequence[tuple[str, str]]) -> list[NemesisStep]:
    """The fault schedule for ``locations`` (``(name, region)`` pairs), sorted by time.

    Every fault it starts it also ends before ``duration_ms - cooldown_ms``; the driver heals,
    revives and restores everything once more at the end whatever happened.
    """
    topo = _Topology(tuple(n for n, _ in locations), {n: r for n, r in locations})
    rng = random.Random(f"{options.seed}/nemesis")
    steps: list[NemesisStep] = []
    t = options.warmup_ms
    end = options.duration_ms - options.cooldown_ms
    episode = 0
    while options.faults and t + options.fault_ms[0] <= end:
        episode += 1
        hold = min(rng.randint(*options.fault_ms), end - t)
        first = rng.choice(options.faults)
        steps += _fault(rng, options, topo, first, t, t + hold, episode)
        others = [f for f in options.faults if f != first]
        if others and hold >= 1_000 and rng.random() < options.overlap_probability:
            start = t + rng.randint(0, hold // 3)
            stop = t + hold - rng.randint(0, hold // 3)
            steps += _fault(rng, options, topo, rng.choice(others), start, stop, episode)
        t += hold + rng.randint(*options.quiet_ms)
    # Ends sort before starts at the same instant, so one step never overlaps another of its kind.
    steps.sort(key=lambda s: (s.at_ms, s.action not in _ENDINGS.values(), s.episode))
    return steps


def _fault(
    rng: random.Random,
    options: ChaosOptions,
    topo: _Topology,
    kind: str,
    start_ms: int,
    stop_ms: int,
    episode: int,
) -> list[NemesisStep]:
    if kind == "partition":
        targets = _partition_targets(rng, topo)
        return [
            NemesisStep(start_ms, "partition", targets, episode=episode),
            NemesisStep(stop_ms, "heal", targets, episode=episode),
        ]
    if kind == "kill":
        victim = (rng.choice(topo.locations),)
        return [
            NemesisStep(start_ms, "kill", victim, episode=episode),
            NemesisStep(stop_ms, "revive", victim, episode=episode),
        ]
    if kind == "skew":
        victim = (rng.choice(topo.locations),)
        skew = rng.randint(*options.skew_ms) * rng.choice((-1, 1))
        return [
            NemesisStep(start_ms, "skew", victim, episode=episode, skew_ms=skew),
            NemesisStep(stop_ms, "unskew", victim, episode=episode),
        ]
    assert kind == "slow", kind
    loc = rng.choice(topo.locations)
    hub = f"hub-{topo.regions[loc]}"
    link = (f"loc-{loc}", hub) if rng.random() < 0.5 else (hub, "core")
    rtt = float(rng.randint(*options.slow_rtt_ms))
    return [
        NemesisStep(start_ms, "slow", link, rtt, episode),
        NemesisStep(stop_ms, "restore", link, episode=episode),
    ]


def _partition_targets(rng: random.Random, topo: _Topology) -> tuple[str, ...]:
    """Some locations (at most all but one, when there are several), or one region's hub."""
    regions = sorted(set(topo.regions.values()))
    if len(regions) > 1 and rng.random() < 0.3:
        return (f"hub-{rng.choice(regions)}",)
    most = max(1, len(topo.locations) - 1)
    chosen = rng.sample(topo.locations, rng.randint(1, most))
    return tuple(f"loc-{x}" for x in sorted(chosen))
