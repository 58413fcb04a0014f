"""The thin driver of a chaos run: carries out a :mod:`edgefn.chaos.plan` against a real planet.

How a run goes (:func:`run_chaos`), given a running planet whose every location serves a function
binding :data:`NAMESPACE` (:func:`write_function` writes one):

1. wait (bounded) until every location's replica is connected and knows every other one;
2. run every client of :func:`~edgefn.chaos.plan.plan_clients` and the nemesis schedule of
   :func:`~edgefn.chaos.plan.plan_nemesis` side by side for ``duration_ms``. Clients talk to each
   node's internal KV listener (``/_edgefn/kv/<ns>/<key>``, signed with the planet secret): it is
   the one place that reports the stamps the eventual/session checkers need and a conflict's
   current revision. Each call is recorded with client-side invoke/return times
   (:class:`~edgefn.chaos.history.Op`). The nemesis calls the same library clients as
   ``edgefn net`` (the link emulator's control API, the supervisor's kill/revive);
3. heal every link, restore every slowed one, revive every killed node; wait (bounded, polling)
   until the replicas agree on their content digest; read every strong key once more
   (linearizability then also covers what survived); collect every replica's content.

:func:`evaluate` runs the checks of :func:`~edgefn.chaos.history.checks` and times each one;
:func:`save_failure` writes the history (JSON lines) with the seed, options and nemesis events.

Outcome classification (what the history records), per response: 200 ``ok``; 409 ``conflict``;
503 ``consistency_unavailable`` / ``not_ready``, or a connection that could not be opened,
``fail`` (nothing was done); 503 ``outcome_unknown``, a timeout, a connection lost mid-request,
or any other error on a write, ``unknown``. Any other error on a read is ``fail``: a read that
did not answer has no effect.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from edgefn._internal_auth import InternalAuth, planet_secret
from edgefn.bus.link_control import LinkControlClient
from edgefn.chaos.history import Op, checks, dump_history
from edgefn.chaos.plan import ChaosOptions, ClientPlan, NemesisStep, plan_clients, plan_nemesis
from edgefn.errors import EdgefnError
from edgefn.planet.client import PlanetClient
from edgefn.state.events import Item

__all__ = [
    "NAMESPACE",
    "ChaosRun",
    "NemesisEvent",
    "Verdict",
    "evaluate",
    "run_chaos",
    "save_failure",
    "summarize",
    "write_function",
]

NAMESPACE = "chaos"
FUNCTION_NAME = "chaos"
_MANIFEST = f"""name = "{FUNCTION_NAME}"
main = "main.py"

[[kv_namespaces]]
binding = "CHAOS"
namespace = "{NAMESPACE}"
"""
_MAIN = '''"""Binds the chaos namespace at every location; clients use the node's internal KV listener."""

from edgefn import Response


async def fetch(request, env, ctx):
    entry = await env.CHAOS.get_entry(request.query.get("key", "k"))
    return Response.json(entry.as_dict())
'''
_REQUEST_TIMEOUT_S = 10.0
_READY_TIMEOUT_S = 120.0
_CONVERGE_TIMEOUT_S = 180.0
_POLL_S = 0.25
_DOWN_BACKOFF_S = 0.2
_FINAL_READ_ATTEMPTS = 40
_NOTHING_DONE = frozenset({"consistency_unavailable", "not_ready", "bad_session"})
ProgressFn = Callable[[str, int, int], None]


def write_function(directory: Path) -> Path:
    """Write the function bundle binding :data:`NAMESPACE` into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "edgefn.toml").write_text(_MANIFEST)
    (directory / "main.py").write_text(_MAIN)
    return directory


@dataclass(frozen=True, slots=True)
class NemesisEvent:
    """One nemesis action as it was carried out (run-time milliseconds)."""

    start_ms: int
    end_ms: int
    action: str
    targets: tuple[str, ...]
    rtt_ms: float
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class ChaosRun:
    """What a run recorded: the history, the nemesis events and each replica's final content."""

    options: ChaosOptions
    locations: list[str]
    history: list[Op] = field(default_factory=list)
    nemesis: list[NemesisEvent] = field(default_factory=list)
    final: dict[str, dict[str, Item]] = field(default_factory=dict)
    converged: bool = False
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    ok: bool
    violations: tuple[str, ...]
    elapsed_ms: float


class _Recorder:
    """Run time (ms since the start) and the history, appended by every client task."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.ids = itertools.count(1)
        self.history: list[Op] = []

    def ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    async def sleep_until(self, at_ms: int) -> None:
        # A schedule, not a wait for a condition: the plan says when.
        await asyncio.sleep(max(0.0, (at_ms - self.ms()) / 1000))


# --------------------------------------------------------------------------- clients


@dataclass(slots=True)
class _ClientState:
    revisions: dict[str, int] = field(default_factory=dict)
    session: str = ""


async def _run_client(
    plan: ClientPlan, http: httpx.AsyncClient, urls: Mapping[str, str], rec: _Recorder
) -> None:
    state = _ClientState()
    while (step := plan.next_op(rec.ms())) is not None:
        await asyncio.sleep(step.think_ms / 1000)
        if_revision = state.revisions.get(step.key, 0) if step.kind == "cas" else None
        start = rec.ms()
        outcome, body, error = await _call(http, urls[step.location], step, if_revision, state)
        op = _record(step, if_revision, start, rec, outcome, body, error)
        rec.history.append(op)
        if error.startswith("Connect"):
            # The node is down: pace the retries instead of spinning on refused connections.
            await asyncio.sleep(_DOWN_BACKOFF_S)
        if op.outcome in ("ok", "conflict") and op.level == "strong":
            state.revisions[op.key] = op.revision
        if op.outcome == "ok" and body.get("session"):
            state.session = str(body["session"])


async def _call(
    http: httpx.AsyncClient,
    base: str,
    step: Any,
    if_revision: int | None,
    state: _ClientState,
) -> tuple[str, dict[str, Any], str]:
    url = f"{base}/_edgefn/kv/{NAMESPACE}/{step.key}"
    params = {"consistency": step.level}
    if step.level == "session" and state.session:
        params["session"] = state.session
    if if_revision is not None:
        params["if_revision"] = str(if_revision)
    write = step.kind != "get"
    try:
        if write:
            r = await http.put(url, params=params, content=step.value.encode())
        else:
            r = await http.get(url, params=params)
    except (httpx.ConnectError, httpx.ConnectTimeout) as err:
        return "fail", {}, f"{type(err).__name__}: {err}"
    except httpx.HTTPError as err:
        return ("unknown" if write else "fail"), {}, f"{type(err).__name__}: {err}"
    try:
        body: dict[str, Any] = r.json()
    except ValueError:
        body = {"error": r.text[:200]}
    if r.status_code == 200:
        return "ok", body, ""
    error = str(body.get("error", f"HTTP {r.status_code}"))
    if r.status_code == 409 and error == "conflict" and step.kind == "cas":
        return "conflict", body, error
    if error in _NOTHING_DONE or not write:
        return "fail", body, error
    return "unknown", body, error


def _record(
    step: Any,
    if_revision: int | None,
    start: int,
    rec: _Recorder,
    outcome: str,
    body: Mapping[str, Any],
    error: str,
) -> Op:
    write = step.kind != "get"
    value = step.value if write else None
    if outcome == "ok" and not write:
        value = body.get("value")
    stamp = body.get("stamp") if outcome == "ok" else None
    return Op(
        op_id=next(rec.ids),
        client=step.client,
        seq=step.seq,
        level=step.level,
        kind=step.kind,
        key=step.key,
        location=step.location,
        invoke_ms=start,
        return_ms=max(start, rec.ms()),
        outcome=outcome,
        value=value,
        if_revision=if_revision,
        revision=int(body.get("revision") or 0) if outcome in ("ok", "conflict") else 0,
        stamp=(int(stamp[0]), str(stamp[1])) if stamp else None,
        error=error,
    )


# --------------------------------------------------------------------------- nemesis


class _Nemesis:
    """Carries out nemesis steps with the planet's own clients and remembers what to undo."""

    def __init__(self, state_dir: Path, planet: Mapping[str, Any]) -> None:
        self.supervisor = PlanetClient(state_dir)
        self.links = LinkControlClient(
            planet["links_url"], timeout_s=30, secret=planet_secret(state_dir)
        )
        self.original_rtt: dict[tuple[str, str], float] = {}
        self.killed: set[str] = set()
        self.skewed: set[str] = set()

    def close(self) -> None:
        self.supervisor.close()

    def apply(self, step: NemesisStep) -> str:
        action, targets = step.action, step.targets
        if action == "partition":
            return f"cut {len(self.links.partition(list(targets)).get('cut', []))} links"
        if action == "heal":
            return f"healed {len(self.links.heal())} links"
        if action == "kill":
            self.killed.add(targets[0])
            self.supervisor.kill(targets[0])
            return "killed"
        if action == "revive":
            self.supervisor.revive(targets[0])
            self.killed.discard(targets[0])
            return "revived"
        if action == "skew":
            self.skewed.add(targets[0])
            self.supervisor.skew(targets[0], step.skew_ms)
            return f"restarted {step.skew_ms:+d} ms off"
        if action == "unskew":
            self.supervisor.skew(targets[0], 0)
            self.skewed.discard(targets[0])
            return "restarted on true time"
        a, b = targets
        if action == "slow":
            if (a, b) not in self.original_rtt:
                self.original_rtt[(a, b)] = self._rtt(a, b)
            return f"link {self.links.delay(a, b, step.rtt_ms)} rtt {step.rtt_ms:g} ms"
        assert action == "restore", action
        rtt = self.original_rtt.pop((a, b), None)
        if rtt is None:
            return "nothing to restore"
        return f"link {self.links.delay(a, b, rtt)} rtt {rtt:g} ms"

    def _rtt(self, a: str, b: str) -> float:
        for link in self.links.links():
            if {link.get("a"), link.get("b")} == {a, b}:
                return float(link["rtt_ms"])
        raise EdgefnError(f"no link between {a} and {b}", hint="see `edgefn net links`")

    def recovery_steps(self, at_ms: int) -> list[NemesisStep]:
        """Undo everything: heal, restore every slowed link, unskew and revive every node."""
        steps = [NemesisStep(at_ms, "heal", ())]
        steps += [NemesisStep(at_ms, "unskew", (loc,)) for loc in sorted(self.skewed)]
        steps += [NemesisStep(at_ms, "restore", link) for link in sorted(self.original_rtt)]
        steps += [NemesisStep(at_ms, "revive", (loc,)) for loc in sorted(self.killed)]
        return steps


async def _carry_out(nemesis: _Nemesis, step: NemesisStep, rec: _Recorder) -> NemesisEvent:
    start = rec.ms()
    try:
        detail, ok = await asyncio.to_thread(nemesis.apply, step), True
    except EdgefnError as err:
        detail, ok = f"{err.message} ({err.hint})", False
    return NemesisEvent(start, rec.ms(), step.action, step.targets, step.rtt_ms, ok, detail)


async def _run_nemesis(
    nemesis: _Nemesis, steps: list[NemesisStep], rec: _Recorder, out: list[NemesisEvent]
) -> None:
    for step in steps:
        await rec.sleep_until(step.at_ms)
        out.append(await _carry_out(nemesis, step, rec))


# --------------------------------------------------------------------------- final state


async def _replica_state(http: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    try:
        r = await http.get(f"{url}/_edgefn/kvstate/{NAMESPACE}")
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    out: dict[str, Any] = r.json()
    return out


async def _states(http: httpx.AsyncClient, urls: Mapping[str, str]) -> list[dict[str, Any] | None]:
    return list(await asyncio.gather(*(_replica_state(http, u) for u in urls.values())))


async def _wait_ready(http: httpx.AsyncClient, urls: Mapping[str, str], timeout_s: float) -> bool:
    """Every replica connected and aware of every location (bounded poll)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = await _states(http, urls)
        if all(
            s is not None and s["driver"]["connected"] and len(s["driver"]["members"]) == len(urls)
            for s in states
        ):
            return True
        await asyncio.sleep(_POLL_S)
    return False


async def _wait_converged(
    http: httpx.AsyncClient, urls: Mapping[str, str], timeout_s: float
) -> tuple[bool, list[dict[str, Any] | None]]:
    """Poll until every replica reports the same digest, or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = await _states(http, urls)
        digests = {s["digest"] if s is not None else None for s in states}
        if len(digests) == 1 and None not in digests:
            return True, states
        if time.monotonic() >= deadline:
            return False, states
        await asyncio.sleep(_POLL_S)


def _items(state: Mapping[str, Any]) -> dict[str, Item]:
    assert state["items"] is not None, "the namespace has too many keys to list"
    return {
        key: Item(
            key,
            base64.b64decode(it["value_b64"]),
            it["revision"],
            stamp=(int(it["stamp"][0]), str(it["stamp"][1])) if it["stamp"] else None,
        )
        for key, it in state["items"].items()
    }


async def _final_reads(
    http: httpx.AsyncClient, urls: Mapping[str, str], keys: list[str], rec: _Recorder
) -> None:
    """One strong read of every strong key after the heal (retried while the home is away)."""
    location = min(urls)
    for n, key in enumerate(keys, 1):
        for _ in range(_FINAL_READ_ATTEMPTS):
            step = _FinalRead(f"final-{location}", n, key, location)
            start = rec.ms()
            outcome, body, error = await _call(http, urls[location], step, None, _ClientState())
            if outcome == "ok":
                rec.history.append(_record(step, None, start, rec, outcome, body, error))
                break
            await asyncio.sleep(_POLL_S)


@dataclass(frozen=True, slots=True)
class _FinalRead:
    client: str
    seq: int
    key: str
    location: str
    level: str = "strong"
    kind: str = "get"
    value: str | None = None


# --------------------------------------------------------------------------- the run


async def run_chaos(
    planet: Mapping[str, Any],
    state_dir: Path,
    options: ChaosOptions,
    *,
    on_progress: ProgressFn | None = None,
) -> ChaosRun:
    """Run the workload and the nemesis on the planet, heal it, wait for convergence, collect."""
    progress = on_progress or (lambda _phase, _done, _total: None)
    locations = [(loc["name"], loc["region"]) for loc in planet["locations"]]
    urls = {loc["name"]: loc["internal_url"] for loc in planet["locations"]}
    run = ChaosRun(options, [n for n, _ in locations])
    limits = httpx.Limits(max_connections=len(urls) * 8 + 16)
    auth = InternalAuth(planet_secret(state_dir))
    nemesis = _Nemesis(state_dir, planet)
    async with httpx.AsyncClient(
        timeout=_REQUEST_TIMEOUT_S, limits=limits, auth=auth, trust_env=False
    ) as http:
        t = time.monotonic()
        progress("replicas connecting", 0, options.duration_ms)
        if not await _wait_ready(http, urls, _READY_TIMEOUT_S):
            raise EdgefnError(
                f"the {NAMESPACE!r} replicas did not all connect within {_READY_TIMEOUT_S:g} s",
                hint=f"see the node logs under {state_dir}/nodes",
            )
        run.timings_s["ready"] = round(time.monotonic() - t, 2)
        rec = _Recorder()
        clients = plan_clients(options, run.locations)
        tasks = [asyncio.ensure_future(_run_client(c, http, urls, rec)) for c in clients]
        steps = plan_nemesis(options, locations)
        tasks.append(asyncio.ensure_future(_run_nemesis(nemesis, steps, rec, run.nemesis)))
        try:
            await _watch(tasks, rec, options, progress)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for step in nemesis.recovery_steps(rec.ms()):
                run.nemesis.append(await _carry_out(nemesis, step, rec))
            nemesis.close()
        run.timings_s["workload"] = round(rec.ms() / 1000, 2)
        t = time.monotonic()
        progress("converging", options.duration_ms, options.duration_ms)
        await _wait_ready(http, urls, _READY_TIMEOUT_S)
        run.converged, states = await _wait_converged(http, urls, _CONVERGE_TIMEOUT_S)
        run.timings_s["converge"] = round(time.monotonic() - t, 2)
        strong_keys = sorted({op.key for op in rec.history if op.level == "strong"})
        await _final_reads(http, urls, strong_keys, rec)
        run.history = rec.history
        run.final = {s["location"]: _items(s) for s in states if s is not None}
    return run


async def _watch(
    tasks: Sequence[asyncio.Future[None]],
    rec: _Recorder,
    options: ChaosOptions,
    progress: ProgressFn,
) -> None:
    """Report progress once a second until every task is done (failing fast if one raises)."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, timeout=1.0)
        for task in done:
            task.result()
        progress(f"{len(rec.history)} ops", min(rec.ms(), options.duration_ms), options.duration_ms)


# --------------------------------------------------------------------------- verdicts


def evaluate(run: ChaosRun) -> list[Verdict]:
    """Run every check on the recorded run; each verdict lists its first violations."""
    verdicts = []
    for name, check in checks(run.history, run.final):
        t = time.perf_counter()
        violations = check()
        elapsed = round((time.perf_counter() - t) * 1000, 1)
        verdicts.append(Verdict(name, not violations, tuple(violations[:20]), elapsed))
    if not run.converged:
        verdicts.append(Verdict("converged_in_time", False, ("digests still differ",), 0.0))
    return verdicts


def summarize(run: ChaosRun, verdicts: list[Verdict]) -> dict[str, Any]:
    """The figures of a run: ops per level/kind/outcome, unknowns, nemesis events, verdicts."""
    ops: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for op in run.history:
        ops[f"{op.level}/{op.kind}"] += 1
        outcomes[f"{op.level}/{op.outcome}"] += 1
    events = Counter(e.action for e in run.nemesis)
    return {
        "seed": run.options.seed,
        "duration_s": run.options.duration_ms / 1000,
        "locations": run.locations,
        "ops_total": len(run.history),
        "ops": dict(sorted(ops.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "unknown_outcomes": sum(op.outcome == "unknown" for op in run.history),
        "nemesis_events": dict(sorted(events.items())),
        "nemesis_failed": [asdict(e) for e in run.nemesis if not e.ok],
        "converged": run.converged,
        "timings_s": run.timings_s,
        "checks": {
            v.name: {"ok": v.ok, "elapsed_ms": v.elapsed_ms, "violations": list(v.violations)}
            for v in verdicts
        },
        "passed": all(v.ok for v in verdicts),
    }


def save_failure(run: ChaosRun, verdicts: list[Verdict], directory: Path) -> Path:
    """Write the seed, options, nemesis events, verdicts and history to one JSON-lines file.

    The first line is ``{"header": {...}}``; every other line is one operation
    (:func:`edgefn.chaos.history.load_history` reads them back and skips the header).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"chaos-seed{run.options.seed}-{datetime.now(UTC):%Y%m%dT%H%M%S}.jsonl"
    header = {
        "seed": run.options.seed,
        "options": asdict(run.options),
        "locations": run.locations,
        "nemesis": [asdict(e) for e in run.nemesis],
        "verdicts": [asdict(v) for v in verdicts],
        "replay": f"edgefn bench chaos --seed {run.options.seed} "
        f"--duration {run.options.duration_ms // 1000} --locations {len(run.locations)}",
    }
    path.write_text(json.dumps({"header": header}) + "\n" + dump_history(run.history))
    return path
