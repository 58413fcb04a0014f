"""Subject names, and the nats-server configs the backbone renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefn.bus import (
    JETSTREAM_DOMAIN,
    BusError,
    ClusterConfig,
    CoreConfig,
    HubConfig,
    bundle_request_subject,
    health_subject,
    load_report_subject,
    render_config,
    telemetry_subject,
)
from edgefn.bus.subjects import HEALTH_ALL


def test_subjects_are_per_location_and_match_their_wildcards() -> None:
    assert health_subject("fra") == "edgefn.health.fra"
    assert HEALTH_ALL == "edgefn.health.*"
    assert load_report_subject("loc-fra") == "edgefn.load.loc-fra"
    assert telemetry_subject("fra_2") == "edgefn.telemetry.fra_2"
    assert bundle_request_subject("eu") == "edgefn.bundle.request.eu"
    assert len({health_subject("a"), load_report_subject("a"), telemetry_subject("a")}) == 3


@pytest.mark.parametrize("bad", ["", "fra.1", "a b", "*", ">", "x" * 65])
def test_a_location_that_cannot_be_a_subject_token_is_refused(bad: str) -> None:
    with pytest.raises(BusError, match="cannot be used in a NATS subject") as info:
        health_subject(bad)
    assert "letters" in info.value.hint


def test_core_config_has_durable_jetstream_domain_and_leafnode_port(tmp_path: Path) -> None:
    config = CoreConfig(
        name="core-1",
        store_dir=tmp_path,
        client_port=4222,
        monitor_port=8222,
        leafnode_port=7422,
        cluster=ClusterConfig(name="edgefn-core", port=6222, routes=("127.0.0.1:6223",)),
    )
    out = render_config(config)
    assert out["jetstream"]["sync_interval"] == "always"
    assert out["jetstream"]["domain"] == JETSTREAM_DOMAIN
    assert out["jetstream"]["store_dir"] == str(tmp_path)
    # no_advertise: hubs reach the core only through the URLs they are given (their links).
    assert out["leafnodes"] == {"host": "127.0.0.1", "port": 7422, "no_advertise": True}
    assert out["cluster"]["routes"] == ["nats-route://127.0.0.1:6223"]
    assert out["http"] == "127.0.0.1:8222"
    assert out["mappings"] == {"$JS.edgefn.API.$O.>": "$O.>"}


def test_hub_config_has_no_jetstream_and_a_leafnode_remote() -> None:
    config = HubConfig(
        name="hub-eu",
        core_leafnode_urls=("nats-leaf://127.0.0.1:17001",),
        client_port=4333,
        monitor_port=8333,
    )
    out = render_config(config)
    assert "jetstream" not in out
    assert out["leafnodes"]["remotes"] == [{"urls": ["nats-leaf://127.0.0.1:17001"]}]
    assert out["leafnodes"]["reconnect"] == "0.25s"
