"""Users, permissions and signed desired state: the pure parts (real servers: tests/security)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefn.bus.credentials import load_credentials, load_users, write_planet_credentials
from edgefn.bus.errors import BusError
from edgefn.bus.nats_config import CoreConfig, HubConfig, render_config
from edgefn.bus.permissions import NatsUser, render_permissions
from edgefn.bus.subjects import TAIL_SESSIONS, tail_event_subject
from edgefn.control.desired_signing import sign_desired, verify_desired
from edgefn.edge.traffic_bus import from_itself
from edgefn.errors import ProtocolError

PW = "p" * 32


def test_servers_with_users_have_no_anonymous_user() -> None:
    users = (NatsUser("control", PW), NatsUser("leaf", PW, "eu"))
    core = render_config(
        CoreConfig(
            name="c",
            store_dir=Path("/x"),
            client_port=1,
            monitor_port=2,
            leafnode_port=3,
            users=users,
        )
    )
    assert "no_auth_user" not in core["authorization"]
    assert [u["user"] for u in core["authorization"]["users"]] == ["control"]
    assert [u["user"] for u in core["leafnodes"]["authorization"]["users"]] == ["leaf-eu"]
    hub = render_config(
        HubConfig(
            name="h",
            core_leafnode_urls=("nats-leaf://127.0.0.1:3",),
            client_port=1,
            monitor_port=2,
            users=(NatsUser("node", PW, "fra", "eu"),),
            leaf_user="leaf-eu",
            leaf_password=PW,
        )
    )
    assert hub["leafnodes"]["remotes"][0]["urls"] == [f"nats-leaf://leaf-eu:{PW}@127.0.0.1:3"]


def test_node_permissions_name_only_its_own_location() -> None:
    perms = render_permissions(NatsUser("node", PW, "fra", "eu"))
    assert perms is not None
    allow = perms["publish"]["allow"]
    assert "edgefn.health.fra" in allow
    assert "$JS.edgefn.API.$KV.edgefn-observed.fra" in allow
    assert "edgefn.kv.*.fra" in allow
    assert not [s for s in allow if "ams" in s or s in ("edgefn.health.*", ">")]
    assert "$JS.edgefn.API.$KV.edgefn-desired.>" in perms["publish"]["deny"]
    assert perms["subscribe"]["allow"][0] == "_INBOX.node-fra.>"


def test_credentials_round_trip_and_keep_passwords(tmp_path: Path) -> None:
    files = write_planet_credentials(tmp_path, regions=["eu"], locations=[("fra", "eu")])
    fra = load_credentials(files["node-fra"])
    assert fra.user == "node-fra"
    assert oct(files["node-fra"].stat().st_mode & 0o777) == "0o600"
    again = write_planet_credentials(tmp_path, regions=["eu"], locations=[("fra", "eu")])
    assert load_credentials(again["node-fra"]) == fra
    hub = {u.name: u for u in load_users(files["hub-eu.users"])}
    assert set(hub) == {"cache-eu", "node-fra"}
    assert hub["node-fra"].password == fra.password


def test_desired_state_signature() -> None:
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    value = sign_desired(key, "fra", b'{"generation":1}')
    assert verify_desired([key.public_key()], "fra", value) == b'{"generation":1}'
    with pytest.raises(ProtocolError, match="mismatch"):
        verify_desired([other.public_key()], "fra", value)
    with pytest.raises(ProtocolError, match="mismatch"):
        verify_desired([key.public_key()], "ams", value)  # Signed for another location.
    with pytest.raises(ProtocolError, match="not signed"):
        verify_desired([key.public_key()], "fra", b'{"generation":1}')
    with pytest.raises(ProtocolError, match="malformed"):
        verify_desired([key.public_key()], "fra", b"edgefn-sig-v1 !!\n{}")
    tampered = value.replace(b'"generation":1', b'"generation":9')
    with pytest.raises(ProtocolError, match="mismatch"):
        verify_desired([key.public_key()], "fra", tampered)


def test_beacon_must_name_its_subjects_location() -> None:
    assert from_itself("edgefn.health.fra", "fra")
    assert not from_itself("edgefn.health.fra", "ams")


def test_tail_subjects_a_node_sends_only_its_own_events_and_only_control_announces() -> None:
    node = render_permissions(NatsUser("node", PW, "fra", "eu"))
    assert node is not None
    assert tail_event_subject("fra", "*") in node["publish"]["allow"]
    assert TAIL_SESSIONS not in node["publish"]["allow"]
    assert TAIL_SESSIONS in node["subscribe"]["allow"]
    assert not [s for s in node["subscribe"]["allow"] if s.startswith("edgefn.tail.")]
    admin = render_permissions(NatsUser("admin", PW))
    assert admin is not None
    assert TAIL_SESSIONS in admin["publish"]["deny"]
    assert tail_event_subject("*", "0123456789abcdef") == "edgefn.tail.*.0123456789abcdef"
    with pytest.raises(BusError):
        tail_event_subject("fra", "a.b")
