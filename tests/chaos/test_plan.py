"""The chaos plan is pure and seeded: the same seed gives the same workload and fault schedule."""

from __future__ import annotations

from edgefn.chaos.plan import ChaosOptions, PlannedOp, plan_clients, plan_nemesis

LOCATIONS = [("nrt", "as-east"), ("fra", "eu-west"), ("gru", "sa-east"), ("ist", "eu-west")]
ENDS = {"partition": "heal", "kill": "revive", "slow": "restore", "skew": "unskew"}


def ops_of(seed: int, *, now_step_ms: int = 37, **kw: object) -> list[PlannedOp]:
    options = ChaosOptions(seed=seed, duration_ms=20_000, **kw)  # type: ignore[arg-type]
    out = []
    for plan in plan_clients(options, [n for n, _ in LOCATIONS]):
        now = 0
        while (op := plan.next_op(now)) is not None:
            out.append(op)
            now += now_step_ms
    return out


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    options = ChaosOptions(seed=7, duration_ms=120_000)
    assert plan_nemesis(options, LOCATIONS) == plan_nemesis(options, LOCATIONS)
    assert ops_of(7) == ops_of(7)
    other = ChaosOptions(seed=8, duration_ms=120_000)
    assert plan_nemesis(other, LOCATIONS) != plan_nemesis(options, LOCATIONS)
    assert ops_of(8) != ops_of(7)


def test_every_fault_is_ended_before_the_cooldown_and_faults_of_a_kind_never_overlap() -> None:
    for seed in range(50):
        options = ChaosOptions(seed=seed, duration_ms=60_000)
        steps = plan_nemesis(options, LOCATIONS)
        assert steps == sorted(steps, key=lambda s: s.at_ms)
        active: dict[str, tuple[str, ...]] = {}
        for step in steps:
            assert options.warmup_ms <= step.at_ms <= options.duration_ms - options.cooldown_ms
            if step.action in ENDS:
                assert step.action not in active, (seed, step)
                active[step.action] = step.targets
            else:
                start = next(k for k, v in ENDS.items() if v == step.action)
                assert active.pop(start) == step.targets, (seed, step)
        assert active == {}, seed


def test_a_long_run_uses_every_fault_and_respects_the_chosen_ones() -> None:
    steps = plan_nemesis(ChaosOptions(seed=3, duration_ms=300_000), LOCATIONS)
    assert {s.action for s in steps} == {
        *("partition", "heal", "kill", "revive"),
        *("slow", "restore", "skew", "unskew"),
    }
    skews = [s.skew_ms for s in steps if s.action == "skew"]
    assert min(skews) < 0 < max(skews)
    assert all(2_000 <= abs(x) <= 20_000 for x in skews)
    only_kills = plan_nemesis(
        ChaosOptions(seed=3, duration_ms=300_000, faults=("kill",)), LOCATIONS
    )
    assert {s.action for s in only_kills} == {"kill", "revive"}
    assert plan_nemesis(ChaosOptions(seed=3, duration_ms=300_000, faults=()), LOCATIONS) == []


def test_partitions_never_cut_off_every_location_and_slow_links_exist() -> None:
    names = {f"loc-{n}" for n, _ in LOCATIONS}
    hubs = {f"hub-{r}" for _, r in LOCATIONS}
    for seed in range(50):
        for step in plan_nemesis(ChaosOptions(seed=seed, duration_ms=60_000), LOCATIONS):
            if step.action == "partition":
                assert set(step.targets) < names or (
                    len(step.targets) == 1 and step.targets[0] in hubs
                )
            if step.action == "slow":
                a, b = step.targets
                assert (a in names and b in hubs) or (a in hubs and b == "core")
                assert 150 <= step.rtt_ms <= 900


def test_clients_cover_every_level_at_every_location_with_unique_values() -> None:
    ops = ops_of(11)
    assert {(op.client.split("-")[0], op.client.split("-")[1]) for op in ops} == {
        (level, loc) for level in ("strong", "session", "eventual") for loc, _ in LOCATIONS
    }
    values = [op.value for op in ops if op.value is not None]
    assert len(values) == len(set(values))
    assert all((op.value is None) == (op.kind == "get") for op in ops)
    eventual = [op for op in ops if op.level == "eventual"]
    assert all(op.location == op.client.removeprefix("eventual-") for op in eventual)
    session = {op.location for op in ops if op.level == "session"}
    assert session == {n for n, _ in LOCATIONS}, "session clients roam"


def test_strong_keys_rotate_with_time_so_every_key_history_stays_short() -> None:
    ops = [op for op in ops_of(5, key_prefix="r1-") if op.level == "strong"]
    keys = {op.key for op in ops}
    assert all(k.startswith("r1-lin-") for k in keys)
    # 20 s with 6 s epochs and two keys per epoch.
    assert keys <= {f"r1-lin-{e}-{k}" for e in range(4) for k in range(2)}
    assert len(keys) > 4
    assert {op.kind for op in ops} == {"get", "put", "cas"}


def test_a_client_stops_at_the_end_of_the_run() -> None:
    (plan, *_) = plan_clients(ChaosOptions(seed=1, duration_ms=1_000), ["nrt"])
    assert plan.next_op(999) is not None
    assert plan.next_op(1_000) is None
