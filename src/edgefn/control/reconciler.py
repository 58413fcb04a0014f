"""The rollout reconciler: desired state per location from deployments, gated by observed health.

Change it only through ``handle(event) -> list[instruction]``; it does no I/O and reads no clock.

Locations register by reporting observed state (generation 0 at start). For every location the
reconciler keeps the desired content it last wrote and that content's generation; after every
event it recomputes the content of every location and emits ``WriteDesired`` for each one that
changed, with a fresh generation from one global, monotonic counter. A location has *applied* its
desired state when it reports a generation >= the one written for it; the reported generations
form the version vector, and a function is converged when every target location has applied.

Rollouts, per function (one at a time; a new deploy supersedes a running one):

- ``immediate``: one stage, every target location at 100%; completes when all have applied.
- ``canary``: stage 0 puts the new version on one location (the first target by id) at
  ``canary_weight`` of its traffic (100% on a first deploy, where there is nothing to split
  with); then one wave per region at 100% (the canary's region first, at most
  ``max_region_waves``); the final stage is every target location at 100%.

A stage advances when every location in it has applied the stage's desired state AND the health
gate has not failed AND (the stage has soaked ``min_soak_ms`` since it was applied, or the new
version served ``advance_requests`` more requests). The gate (``edgefn.control.gates``) compares
the new version, summed over all locations, with the active one: at the locations serving both
(a canary) when those have ``min_requests`` of the active one's, else everywhere it serves. Nodes
report latency over the same recent window for every version (``observe/version_stats.py``), so
a slow spell of the whole planet does not count against the version that happened to serve it.
Any node reporting that it could not load the new version fails the gate too. A failed gate rolls back automatically: the rollout ends and
every location returns to the active version (or drops the function on a first deploy). Manual
rollback sends every location to the chosen version (default: the previous one) in one step.

Secrets: a ``VersionRef`` carries the function's ``secrets_generation``; the control service
rolls a secret change out as an ``immediate`` deploy of the active code with the new generation
(docs/design/0013-secrets.md). Such a rollout keeps ``previous`` pointing at the older code. A
location that reports a new ``secrets_key`` gets its desired state again (to be resealed).

A silent location (partitioned, crashed) never reports the new generation, so the stage waits
for it; nothing times out on its own, because a rollout that proceeds without hearing from a
location cannot know what that location serves.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from edgefn.control.events import (
    STRATEGIES,
    DeploymentCompleted,
    DeploymentRecord,
    DeploymentStarted,
    DeployRequested,
    Event,
    FunctionRestored,
    FunctionStatus,
    Instruction,
    LocationForgotten,
    LocationStatus,
    NodeObserved,
    PlacementChosen,
    Rejected,
    RollbackRequested,
    RolledBack,
    StageAdvanced,
    Tick,
    WriteDesired,
)
from edgefn.control.gates import (
    GateOutcome,
    GateThresholds,
    aggregate,
    evaluate_gate,
    since_mark,
)
from edgefn.control.model import (
    DesiredState,
    FunctionDesired,
    ObservedState,
    VersionRef,
    VersionStats,
    VersionWeight,
)

__all__ = ["Reconciler", "ReconcilerOptions", "ReconcilerStatistics", "Stage"]

MAX_LOCATIONS: Final = 4096
MAX_FUNCTIONS: Final = 10_000
MAX_HISTORY: Final = 20
_WEIGHT_EPS: Final = 1e-9


@dataclass(frozen=True, slots=True)
class ReconcilerOptions:
    gates: GateThresholds = field(default_factory=GateThresholds)
    canary_weight: float = 0.1
    max_region_waves: int = 3
    # A smart function's old locations serve on this long after every new one applied it: the
    # other locations learn from beacons (a few hundred ms) that the new ones run it, and until
    # then forward its requests to the old ones.
    placement_grace_ms: int = 5_000

    def __post_init__(self) -> None:
        assert 0.0 < self.canary_weight <= 1.0
        assert self.max_region_waves >= 0
        assert self.placement_grace_ms >= 0


@dataclass(frozen=True, slots=True)
class ReconcilerStatistics:
    locations: int
    functions: int
    rollouts_in_progress: int
    generation: int
    deployments_completed: int
    rollbacks_automatic: int
    rollbacks_manual: int


@dataclass(frozen=True, slots=True)
class Stage:
    """``kind``: canary (key = location), region (key = region) or all. ``weight`` of new."""

    kind: str
    key: str
    weight: float


@dataclass(slots=True)
class _Location:
    region: str
    url: str
    applied: int
    last_seen_ms: int
    stats: dict[str, dict[str, VersionStats]]
    load_errors: dict[str, str]
    secrets_key: str = ""


@dataclass(slots=True)
class _Rollout:
    deployment_id: str
    version: VersionRef
    strategy: str
    stages: tuple[Stage, ...]
    started_ms: int
    stage: int = 0
    ready_since_ms: int | None = None
    requests_at_stage_start: int = 0
    allow_no_traffic: bool = False
    # The active version's stats per location when this rollout began; at a location of the
    # rollout's stages, its last report before the new version served there. The health gate
    # judges the active version by what it served since (the time the new version is judged
    # on), not since its own activation, so a fault in a young canary's first seconds is not
    # compared with hours of calm.
    baseline_marks: dict[str, VersionStats] = field(default_factory=dict)


@dataclass(slots=True)
class _Function:
    regions: tuple[str, ...] = ()
    active: VersionRef | None = None
    previous: VersionRef | None = None
    rollout: _Rollout | None = None
    # Smart placement (None: by regions): the chosen locations, and those it left that serve on
    # until every chosen one applied the function.
    placed: tuple[str, ...] | None = None
    leaving: frozenset[str] = frozenset()
    # When every chosen location had applied it (None: not yet): leaving ends a grace later.
    arrived_ms: int | None = None
    history: deque[DeploymentRecord] = field(default_factory=lambda: deque(maxlen=MAX_HISTORY))


class Reconciler:
    """Rollout state for every function and location. Change it only through ``handle()``."""

    def __init__(self, options: ReconcilerOptions | None = None) -> None:
        self._options = options or ReconcilerOptions()
        self._locations: dict[str, _Location] = {}
        self._functions: dict[str, _Function] = {}
        self._content: dict[str, dict[str, FunctionDesired]] = {}
        self._desired_gen: dict[str, int] = {}
        self._generation = 0
        self._deploy_seq = 0
        self._completed = self._auto_rollbacks = self._manual_rollbacks = 0

    # -- the one mutator --------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        out: list[Instruction] = []
        force: set[str] = set()
        match event:
            case NodeObserved(observed=observed, now_ms=now_ms):
                self._observe(observed, now_ms, out, force)
            case Tick():
                pass
            case DeployRequested():
                self._deploy(event, out)
            case RollbackRequested():
                self._rollback_requested(event, out)
            case LocationForgotten(location=location):
                self._forget(location)
            case FunctionRestored():
                self._restore(event)
            case PlacementChosen():
                self._place(event.function, event.locations)
        clock_ms = None if isinstance(event, LocationForgotten) else event.now_ms
        # Desired content depends only on functions, rollouts and the set of locations; a report
        # from a known location or a tick changes none of them unless evaluation emits something,
        # so only then is every location recomputed (the common event stays O(1) in locations).
        changed = bool(out) or not isinstance(event, NodeObserved | Tick) or bool(force)
        self._write_changed(out, force, everything=changed)
        if clock_ms is not None:
            # Evaluating can end a stage or a rollout, which changes desired state again; a
            # bounded number of passes lets an immediately-ready stage chain (e.g. no locations).
            for _ in range(8):
                before = len(out)
                for name in sorted(self._functions):
                    self._evaluate(name, clock_ms, out)
                if len(out) == before:
                    break
                self._write_changed(out, set(), everything=True)
        if clock_ms is not None and self._settle_placements(clock_ms):
            self._write_changed(out, set(), everything=True)
        return out

    # -- events -----------------------------------------------------------------------------------

    def _observe(
        self, obs: ObservedState, now_ms: int, out: list[Instruction], force: set[str]
    ) -> None:
        loc = self._locations.get(obs.location)
        if loc is None:
            if len(self._locations) >= MAX_LOCATIONS:
                out.append(Rejected("", f"location {obs.location!r} refused", "too many locations"))
                return
            loc = _Location(obs.region, obs.url, obs.generation, now_ms, {}, {}, obs.secrets_key)
            self._locations[obs.location] = loc
            force.add(obs.location)
        if obs.secrets_key != loc.secrets_key:
            # A new node key (its state was wiped): what was sealed for the old key must be
            # sealed again, so the location gets a fresh desired state.
            loc.secrets_key = obs.secrets_key
            force.add(obs.location)
        # A node ahead of us means this reconciler restarted without its counter: jump past the
        # node's generation so what we write next is newer than anything the node applied.
        if obs.generation > self._desired_gen.get(obs.location, 0):
            force.add(obs.location)
        self._generation = max(self._generation, obs.generation)
        loc.region, loc.url = obs.region or loc.region, obs.url or loc.url
        loc.applied, loc.last_seen_ms = obs.generation, now_ms
        loc.stats = {name: dict(versions) for name, versions in obs.functions.items()}
        loc.load_errors = dict(obs.errors)

    def _forget(self, location: str) -> None:
        self._locations.pop(location, None)
        self._content.pop(location, None)
        self._desired_gen.pop(location, None)

    def _restore(self, ev: FunctionRestored) -> None:
        if ev.function in self._functions or len(self._functions) >= MAX_FUNCTIONS:
            return
        fn = self._functions[ev.function] = _Function(ev.regions, ev.active, ev.previous)
        fn.placed = ev.placed
        assert fn.rollout is None

    def _place(self, name: str, locations: tuple[str, ...] | None) -> None:
        fn = self._functions.get(name)
        if fn is None:
            return
        if fn.placed is not None and locations is not None:
            fn.leaving = (fn.leaving | set(fn.placed)) - set(locations)
        else:
            fn.leaving = frozenset()
        fn.arrived_ms = None
        fn.placed = None if locations is None else tuple(sorted(set(locations)))

    def _settle_placements(self, now_ms: int) -> bool:
        """Let the locations a smart function left go ``placement_grace_ms`` after every chosen
        one applied it (the other locations must learn where it runs now before they stop
        forwarding to the old ones)."""
        settled = False
        for fn in self._functions.values():
            if not fn.leaving or fn.placed is None:
                continue
            chosen = [t for t in fn.placed if t in self._locations]
            if not chosen or not all(self._applied(t) for t in chosen):
                fn.arrived_ms = None
                continue
            if fn.arrived_ms is None:
                fn.arrived_ms = now_ms
            if now_ms - fn.arrived_ms >= self._options.placement_grace_ms:
                fn.leaving, fn.arrived_ms = frozenset(), None
                settled = True
        return settled

    def _placed_at(self, fn: _Function, location: str) -> bool:
        if fn.placed is not None:
            return location in fn.placed or location in fn.leaving
        return not fn.regions or self._locations[location].region in fn.regions

    def _deploy(self, ev: DeployRequested, out: list[Instruction]) -> None:
        if ev.strategy not in STRATEGIES:
            out.append(Rejected(ev.function, f"unknown strategy {ev.strategy!r}", str(STRATEGIES)))
            return
        fn = self._functions.get(ev.function)
        if fn is None:
            if len(self._functions) >= MAX_FUNCTIONS:
                out.append(Rejected(ev.function, "too many functions", "delete unused functions"))
                return
            fn = self._functions[ev.function] = _Function()
        r = fn.rollout
        if r is not None and r.stage == len(r.stages) - 1 and r.version != ev.version:
            # A rollout whose last stage is out is judged before a new deploy replaces it: if
            # every location applied it, it completes now, so a rollback of the new deploy goes
            # back to it (deploy v1, deploy v2, rollback answered "no previous version").
            self._evaluate(ev.function, ev.now_ms, out)
        if fn.active == ev.version:
            hint = "deploy a different version; to abandon a rollout, roll back"
            out.append(Rejected(ev.function, f"version {ev.version.version_id} is active", hint))
            return
        if fn.rollout is not None:
            self._finish(ev.function, fn, "superseded", ev.now_ms, "superseded by a new deploy")
        fn.regions = ev.regions
        self._place(ev.function, ev.placed)
        self._deploy_seq += 1
        deployment_id = f"d{self._deploy_seq}-{ev.version.version_id}"
        stages = self._plan(ev.strategy, self.targets(ev.function), fn.active is not None)
        fn.rollout = _Rollout(
            deployment_id,
            ev.version,
            ev.strategy,
            stages,
            ev.now_ms,
            allow_no_traffic=ev.allow_no_traffic,
        )
        if fn.active is not None:
            fn.rollout.baseline_marks = self._stats_at(ev.function, fn.active.version_id)
        fn.history.append(self._record(ev.function, fn.rollout, "in_progress"))
        out.append(
            DeploymentStarted(
                ev.function, deployment_id, ev.version.version_id, ev.strategy, len(stages)
            )
        )

    def _rollback_requested(self, ev: RollbackRequested, out: list[Instruction]) -> None:
        fn = self._functions.get(ev.function)
        if fn is None:
            out.append(Rejected(ev.function, "function was never deployed", "deploy it first"))
            return
        if fn.rollout is not None and ev.to in (None, fn.active):
            # Going back to the active version is abandoning the rollout, nothing more.
            self._roll_back(ev.function, fn, "manual rollback", ev.now_ms, out, automatic=False)
            return
        target = ev.to if ev.to is not None else fn.previous
        if target is None:
            out.append(Rejected(ev.function, "no previous version", "name a version to go to"))
            return
        if fn.rollout is None and target == fn.active:
            out.append(Rejected(ev.function, f"{target.version_id} is already active", ""))
            return
        deployment_id = ""
        if fn.rollout is not None:
            deployment_id = fn.rollout.deployment_id
            self._finish(ev.function, fn, "rolled_back", ev.now_ms, "manual rollback")
        from_id = fn.active.version_id if fn.active else ""
        fn.previous, fn.active = fn.active, target
        self._manual_rollbacks += 1
        out.append(
            RolledBack(ev.function, deployment_id, from_id, target.version_id, "manual", False)
        )

    # -- rollout progress -------------------------------------------------------------------------

    def _plan(self, strategy: str, targets: tuple[str, ...], has_active: bool) -> tuple[Stage, ...]:
        if strategy == "immediate" or not targets:
            return (Stage("all", "", 1.0),)
        canary = targets[0]
        first_region = self._locations[canary].region
        regions = sorted({self._locations[t].region for t in targets} - {first_region})
        waves = [first_region, *regions][: self._options.max_region_waves]
        if waves and len(waves) == len(regions) + 1:
            waves.pop()  # the last region's wave is the final "all" stage
        weight = self._options.canary_weight if has_active else 1.0
        middle = tuple(Stage("region", region, 1.0) for region in waves)
        return (Stage("canary", canary, weight), *middle, Stage("all", "", 1.0))

    def _stage_locations(self, name: str, rollout: _Rollout) -> tuple[str, ...]:
        targets = self.targets(name)
        chosen: set[str] = set()
        for stage in rollout.stages[: rollout.stage + 1]:
            if stage.kind == "all":
                return targets
            if stage.kind == "canary":
                chosen.update(t for t in targets if t == stage.key)
            else:
                chosen.update(t for t in targets if self._locations[t].region == stage.key)
        return tuple(sorted(chosen))

    def _version_stats(self, name: str, version_id: str) -> VersionStats:
        return aggregate(
            loc.stats[name][version_id]
            for loc in self._locations.values()
            if version_id in loc.stats.get(name, {})
        )

    def _stats_at(self, name: str, version_id: str) -> dict[str, VersionStats]:
        return {
            location: loc.stats[name][version_id]
            for location, loc in self._locations.items()
            if version_id in loc.stats.get(name, {})
        }

    def _update_marks(self, name: str, r: _Rollout, version_id: str) -> None:
        for location in self._stage_locations(name, r):
            stats = self._locations[location].stats.get(name, {})
            if r.version.version_id not in stats and version_id in stats:
                r.baseline_marks[location] = stats[version_id]

    def _baseline_stats(self, name: str, r: _Rollout, version_id: str) -> VersionStats:
        """The active version's stats since the rollout began (``since_mark``), from the
        locations serving the new one too when they have enough of its requests: a canary is
        judged against its own location's traffic over the same time (the same users, the same
        path to the KV home, the same faults), not a planet-wide mix of a longer past."""
        self._update_marks(name, r, version_id)
        new_id = r.version.version_id
        now = self._stats_at(name, version_id)
        since = {loc: since_mark(s, r.baseline_marks.get(loc)) for loc, s in now.items()}
        side_by_side = aggregate(
            s for loc, s in since.items() if new_id in self._locations[loc].stats[name]
        )
        if side_by_side.requests >= self._options.gates.min_requests:
            return side_by_side
        return aggregate(since.values())

    def _evaluate(self, name: str, now_ms: int, out: list[Instruction]) -> None:
        fn = self._functions[name]
        r = fn.rollout
        if r is None:
            return
        stage_locations = self._stage_locations(name, r)
        for location in stage_locations:
            reason = self._locations[location].load_errors.get(r.version.version_id)
            if reason is not None:
                why = f"{location} could not load {r.version.version_id}: {reason}"
                self._roll_back(name, fn, why, now_ms, out, automatic=True)
                return
        new = self._version_stats(name, r.version.version_id)
        prev = self._baseline_stats(name, r, fn.active.version_id) if fn.active else VersionStats()
        gate = evaluate_gate(new, prev, self._options.gates)
        if gate.outcome is GateOutcome.FAILED:
            self._roll_back(name, fn, f"health gate failed: {gate.reason}", now_ms, out, True)
            return
        if not all(self._applied(location) for location in stage_locations):
            r.ready_since_ms = None
            return
        if r.ready_since_ms is None:
            r.ready_since_ms = now_ms
        soaked = now_ms - r.ready_since_ms >= self._options.gates.min_soak_ms
        served = new.requests - r.requests_at_stage_start >= self._options.gates.advance_requests
        # Soaking alone is no evidence: a canary with zero requests proved nothing.
        evidence = new.requests >= self._options.gates.min_requests or r.allow_no_traffic
        if r.strategy == "immediate" or served or (soaked and evidence):
            self._advance(name, fn, r, now_ms, new.requests, out)

    def _advance(
        self,
        name: str,
        fn: _Function,
        r: _Rollout,
        now_ms: int,
        requests: int,
        out: list[Instruction],
    ) -> None:
        if r.stage + 1 >= len(r.stages):
            self._finish(name, fn, "completed", now_ms, "")
            # A secrets rollout redeploys the same code: "previous" stays the previous code, so
            # a rollback after changing a secret still goes back to older code.
            if fn.active is None or fn.active.version_id != r.version.version_id:
                fn.previous = fn.active
            fn.active = r.version
            self._completed += 1
            out.append(DeploymentCompleted(name, r.deployment_id, r.version.version_id))
            return
        r.stage += 1
        r.ready_since_ms = None
        r.requests_at_stage_start = requests
        fn.history[-1] = self._record(name, r, "in_progress")
        stage = r.stages[r.stage]
        locations = self._stage_locations(name, r)
        out.append(
            StageAdvanced(name, r.deployment_id, r.stage, locations, stage.weight, "gate passed")
        )

    def _roll_back(
        self,
        name: str,
        fn: _Function,
        reason: str,
        now_ms: int,
        out: list[Instruction],
        automatic: bool,
    ) -> None:
        r = fn.rollout
        assert r is not None
        self._finish(name, fn, "rolled_back", now_ms, reason)
        if automatic:
            self._auto_rollbacks += 1
        else:
            self._manual_rollbacks += 1
        to = fn.active.version_id if fn.active else None
        out.append(RolledBack(name, r.deployment_id, r.version.version_id, to, reason, automatic))

    def _finish(self, name: str, fn: _Function, status: str, now_ms: int, reason: str) -> None:
        r = fn.rollout
        assert r is not None
        fn.history[-1] = self._record(name, r, status, now_ms, reason)
        fn.rollout = None

    @staticmethod
    def _record(
        name: str, r: _Rollout, status: str, finished_ms: int | None = None, reason: str = ""
    ) -> DeploymentRecord:
        return DeploymentRecord(
            r.deployment_id,
            name,
            r.version.version_id,
            r.strategy,
            status,
            r.stage,
            len(r.stages),
            r.started_ms,
            finished_ms,
            reason,
        )

    # -- desired state ----------------------------------------------------------------------------

    def _applied(self, location: str) -> bool:
        return self._locations[location].applied >= self._desired_gen.get(location, 0)

    def _stage_sets(self) -> dict[str, frozenset[str]]:
        return {
            name: frozenset(self._stage_locations(name, fn.rollout))
            for name, fn in self._functions.items()
            if fn.rollout is not None
        }

    def _content_for(
        self, location: str, stage_sets: dict[str, frozenset[str]]
    ) -> dict[str, FunctionDesired]:
        content: dict[str, FunctionDesired] = {}
        for name in sorted(self._functions):
            fn = self._functions[name]
            if not self._placed_at(fn, location):
                continue
            versions: list[VersionWeight] = []
            secrets_generation = fn.active.secrets_generation if fn.active else 0
            r = fn.rollout
            if r is not None and location in stage_sets[name]:
                secrets_generation = r.version.secrets_generation
                weight = r.stages[r.stage].weight if fn.active else 1.0
                versions.append(VersionWeight(r.version.version_id, r.version.sha256, weight))
                if weight < 1.0 and fn.active is not None:
                    active = fn.active
                    versions.append(VersionWeight(active.version_id, active.sha256, 1.0 - weight))
            elif fn.active is not None:
                versions.append(VersionWeight(fn.active.version_id, fn.active.sha256, 1.0))
            if versions:
                content[name] = FunctionDesired(tuple(versions), secrets_generation)
        return content

    def _signatures(self, content: dict[str, FunctionDesired]) -> dict[str, str]:
        known: dict[str, str] = {}
        for fn in self._functions.values():
            for ref in (fn.active, fn.previous, fn.rollout.version if fn.rollout else None):
                if ref is not None and ref.signature:
                    known[ref.sha256] = ref.signature
        wanted = {v.sha256 for f in content.values() for v in f.versions}
        return {sha: known[sha] for sha in sorted(wanted) if sha in known}

    def _write_changed(self, out: list[Instruction], force: set[str], *, everything: bool) -> None:
        if not everything and not force:
            return
        stage_sets = self._stage_sets()
        for location in sorted(self._locations) if everything else sorted(force):
            content = self._content_for(location, stage_sets)
            if location not in force and self._content.get(location) == content:
                continue
            self._generation += 1
            self._content[location] = content
            self._desired_gen[location] = self._generation
            state = DesiredState(self._generation, content, location, self._signatures(content))
            out.append(WriteDesired(location, state))

    # -- queries ----------------------------------------------------------------------------------

    def targets(self, name: str) -> tuple[str, ...]:
        """Locations a function is placed at: all known ones, unless its placement names regions
        or the planner chose them (with those it is leaving, while they still serve)."""
        fn = self._functions.get(name)
        if fn is None:
            return tuple(sorted(self._locations))
        return tuple(sorted(i for i in self._locations if self._placed_at(fn, i)))

    def functions(self) -> tuple[str, ...]:
        return tuple(sorted(self._functions))

    def desired(self, location: str) -> DesiredState | None:
        if location not in self._content:
            return None
        content = self._content[location]
        return DesiredState(
            self._desired_gen[location], content, location, self._signatures(content)
        )

    def function_status(self, name: str) -> FunctionStatus | None:
        fn = self._functions.get(name)
        if fn is None:
            return None
        targets = self.targets(name)
        vector = tuple((t, self._locations[t].applied) for t in targets)
        waiting = tuple(t for t in targets if not self._applied(t))
        return FunctionStatus(
            name,
            fn.active,
            fn.previous,
            fn.history[-1] if fn.history else None,
            fn.regions,
            targets,
            vector,
            not waiting,
            waiting,
            fn.placed,
        )

    def deployments(self, name: str) -> tuple[DeploymentRecord, ...]:
        fn = self._functions.get(name)
        return tuple(fn.history) if fn else ()

    def location_status(self) -> tuple[LocationStatus, ...]:
        return tuple(
            LocationStatus(
                i,
                loc.region,
                loc.url,
                loc.applied,
                self._desired_gen.get(i, 0),
                loc.last_seen_ms,
                tuple(sorted(loc.load_errors.items())),
            )
            for i, loc in sorted(self._locations.items())
        )

    def pinned_versions(self, name: str) -> frozenset[str]:
        """Versions the registry must keep: active, previous and the one being rolled out."""
        fn = self._functions.get(name)
        if fn is None:
            return frozenset()
        refs = (fn.active, fn.previous, fn.rollout.version if fn.rollout else None)
        return frozenset(ref.version_id for ref in refs if ref is not None)

    def statistics(self) -> ReconcilerStatistics:
        return ReconcilerStatistics(
            len(self._locations),
            len(self._functions),
            sum(1 for fn in self._functions.values() if fn.rollout is not None),
            self._generation,
            self._completed,
            self._auto_rollbacks,
            self._manual_rollbacks,
        )

    def check_invariants(self) -> None:
        assert len(self._locations) <= MAX_LOCATIONS
        assert len(self._functions) <= MAX_FUNCTIONS
        stage_sets = self._stage_sets()
        for location, content in self._content.items():
            assert location in self._locations, location
            assert self._desired_gen[location] <= self._generation
            # After every handle() the written content is what the current state implies.
            assert content == self._content_for(location, stage_sets), location
            for name, desired in content.items():
                total = sum(v.weight for v in desired.versions)
                assert abs(total - 1.0) < _WEIGHT_EPS, (location, name, total)
                assert all(0.0 < v.weight <= 1.0 for v in desired.versions), desired
                assert len({v.version_id for v in desired.versions}) == len(desired.versions)
        for location in self._locations:
            assert location in self._content, location
            assert self._locations[location].applied <= self._generation
        for name, fn in self._functions.items():
            assert len(fn.history) <= MAX_HISTORY
            r = fn.rollout
            if r is not None:
                assert 0 <= r.stage < len(r.stages), (name, r.stage)
                assert fn.active != r.version, name
                assert fn.history[-1].deployment_id == r.deployment_id
                assert fn.history[-1].status == "in_progress"
