"""Wire model round trips and malformed input, gate rules, and the registry's pruning."""

from __future__ import annotations

import pytest

from edgefn.bundle import parse_manifest
from edgefn.control import (
    DesiredState,
    FunctionDesired,
    GateOutcome,
    GateThresholds,
    ObservedState,
    VersionStats,
    VersionWeight,
    aggregate,
    decode_desired,
    decode_observed,
    encode_desired,
    encode_observed,
    evaluate_gate,
)
from edgefn.control.registry import (
    Registry,
    VersionInfo,
    decode_record,
    encode_record,
    summarize_manifest,
)
from edgefn.errors import EdgefnError, ProtocolError

MANIFEST = parse_manifest(
    'name = "shop"\nroutes = ["a.com/*"]\n[[kv_namespaces]]\nbinding = "KV"\nnamespace = "k"',
    path="x",
)


def test_desired_state_json_round_trip_and_shape() -> None:
    state = DesiredState(
        7,
        {"shop": FunctionDesired((VersionWeight("a" * 12, "a" * 64, 0.9),))},
        "ams",
        {"a" * 64: "sig"},
    )
    data = encode_desired(state)
    assert data.startswith(b'{"generation":7,"functions":{"shop":{"versions":[["aaaa')
    assert decode_desired(data) == state
    assert isinstance(decode_desired(data).functions["shop"].versions[0], VersionWeight)


def test_observed_state_round_trip_with_defaults() -> None:
    obs = ObservedState("ams", 3, {"shop": {"v1": VersionStats(10, 1, 2.0, 9.5)}}, {"v2": "bad"})
    assert decode_observed(encode_observed(obs)) == obs
    assert decode_observed(b'{"location":"x","generation":0}').functions == {}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"not json", "not JSON"),
        (b'{"generation":"x","functions":{}}', "malformed desired state"),
        (b'{"functions":{}}', "malformed desired state"),
        (b" " * (4 * 1024 * 1024 + 1), "over"),
    ],
)
def test_malformed_desired_state_is_protocol_error(data: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        decode_desired(data)


def test_malformed_observed_state_is_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="malformed observed state"):
        decode_observed(b'{"location":1,"generation":0}')


def test_aggregate_sums_and_weights_percentiles() -> None:
    total = aggregate([VersionStats(100, 1, 10, 100), VersionStats(300, 3, 20, 200)])
    assert total == VersionStats(400, 4, 17.5, 175.0)
    assert aggregate([]) == VersionStats()


TH = GateThresholds(min_requests=100, latency_slack_ms=10)


@pytest.mark.parametrize(
    ("new", "prev", "outcome"),
    [
        (VersionStats(99, 99, 1, 1), VersionStats(1000, 0, 1, 1), GateOutcome.UNDECIDED),
        (VersionStats(100, 1, 1, 1), VersionStats(1000, 0, 1, 1), GateOutcome.PASSED),  # 1% = slack
        (VersionStats(100, 2, 1, 1), VersionStats(1000, 0, 1, 1), GateOutcome.FAILED),
        (VersionStats(1000, 100, 1, 1), VersionStats(1000, 50, 1, 1), GateOutcome.PASSED),  # 2x
        (VersionStats(1000, 101, 1, 1), VersionStats(1000, 50, 1, 1), GateOutcome.FAILED),
        (VersionStats(100, 0, 1, 160), VersionStats(1000, 0, 1, 100), GateOutcome.PASSED),
        (VersionStats(100, 0, 1, 161), VersionStats(1000, 0, 1, 100), GateOutcome.FAILED),
        # A previous version with too few requests is no baseline: latency is not judged.
        (VersionStats(100, 0, 1, 999), VersionStats(99, 0, 1, 1), GateOutcome.PASSED),
        (VersionStats(100, 2, 1, 1), VersionStats(0, 0, 0, 0), GateOutcome.FAILED),
    ],
)
def test_gate_rules(new: VersionStats, prev: VersionStats, outcome: GateOutcome) -> None:
    result = evaluate_gate(new, prev, TH)
    assert result.outcome is outcome, result.reason


def _info(n: int) -> VersionInfo:
    sha = f"{n:012x}" + "0" * 52
    return VersionInfo(sha[:12], sha, "sig", "key", n, 10, summarize_manifest(MANIFEST))


def test_registry_keeps_newest_and_never_prunes_pinned() -> None:
    reg = Registry(keep_versions=5)
    pruned_all = []
    for n in range(1, 11):
        _, pruned = reg.add_version(_info(n), now_ms=n, pinned=frozenset({_info(1).version_id}))
        pruned_all += pruned
        reg.check_invariants()
    kept = [v.created_ms for v in reg.versions("shop")]
    assert kept == [10, 9, 8, 7, 1]
    assert [v.created_ms for v in pruned_all] == [2, 3, 4, 5, 6]
    assert reg.statistics().pruned_total == 5


def test_registry_add_is_idempotent_and_lookup_by_prefix() -> None:
    reg = Registry()
    reg.add_version(_info(0xABCDEF), now_ms=1, pinned=frozenset())
    record, pruned = reg.add_version(_info(0xABCDEF), now_ms=2, pinned=frozenset())
    assert (len(record.versions), pruned) == (1, [])
    info = _info(0xABCDEF)
    assert reg.find_version("shop", info.version_id) == info
    assert reg.find_version("shop", info.sha256[:20]) == info
    assert reg.find_version("shop", "zzzzzz") is None
    assert reg.find_version("shop", "000") is None  # too short
    assert reg.find_version("nope", info.version_id) is None
    assert reg.has_sha256(info.sha256)
    assert record.versions[0].manifest.kv_bindings == ("KV",)
    assert decode_record(encode_record(record)) == record


def test_malformed_registry_record() -> None:
    with pytest.raises(EdgefnError, match="malformed registry record"):
        decode_record(b"{")
