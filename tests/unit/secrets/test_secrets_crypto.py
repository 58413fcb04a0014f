"""Secret encryption helpers: round trips, wrong keys and associated data, nonces, key files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from edgefn.secrets.crypto import (
    KEY_BYTES,
    NONCE_BYTES,
    MasterKey,
    NodeKey,
    SecretsError,
    load_or_create_master_key,
    load_or_create_node_key,
    open_for_node,
    seal_for_node,
)

AD = {"function": "api", "name": "TOKEN", "revision": 3}


def test_at_rest_round_trip() -> None:
    key = MasterKey(os.urandom(KEY_BYTES))
    blob = key.encrypt(b"hunter2", **AD)
    assert b"hunter2" not in blob
    assert key.decrypt(blob, **AD) == b"hunter2"


@pytest.mark.parametrize(
    "other",
    [
        {"function": "other", "name": "TOKEN", "revision": 3},
        {"function": "api", "name": "OTHER", "revision": 3},
        {"function": "api", "name": "TOKEN", "revision": 4},
        # Length-prefixed parts: shifting a character between fields changes the AD.
        {"function": "apiT", "name": "OKEN", "revision": 3},
    ],
)
def test_at_rest_blob_does_not_open_under_other_associated_data(other: dict[str, object]) -> None:
    key = MasterKey(os.urandom(KEY_BYTES))
    blob = key.encrypt(b"v", **AD)
    with pytest.raises(SecretsError, match="does not decrypt"):
        key.decrypt(blob, **other)  # type: ignore[arg-type]


def test_at_rest_wrong_key_and_tamper_fail() -> None:
    key, other = MasterKey(os.urandom(KEY_BYTES)), MasterKey(os.urandom(KEY_BYTES))
    blob = key.encrypt(b"value", **AD)
    with pytest.raises(SecretsError):
        other.decrypt(blob, **AD)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SecretsError):
        key.decrypt(tampered, **AD)
    with pytest.raises(SecretsError, match="truncated"):
        key.decrypt(blob[:10], **AD)


def test_nonces_are_unique() -> None:
    key = MasterKey(os.urandom(KEY_BYTES))
    nonces = {key.encrypt(b"same", **AD)[:NONCE_BYTES] for _ in range(2000)}
    assert len(nonces) == 2000
    node = NodeKey.generate()
    boxes = {
        base64.b64decode(
            seal_for_node(
                b"x", node_public_b64=node.public_b64(), location="fra", function="f", generation=1
            )
        )[1 + KEY_BYTES : 1 + KEY_BYTES + NONCE_BYTES]
        for _ in range(500)
    }
    assert len(boxes) == 500


def _seal(node: NodeKey, plaintext: bytes = b"s3cret") -> str:
    return seal_for_node(
        plaintext, node_public_b64=node.public_b64(), location="fra", function="api", generation=2
    )


def test_node_box_round_trip() -> None:
    node = NodeKey.generate()
    box = _seal(node)
    assert b"s3cret" not in base64.b64decode(box)
    assert open_for_node(box, key=node, location="fra", function="api", generation=2) == b"s3cret"


def test_another_node_cannot_open_a_box() -> None:
    fra, ams = NodeKey.generate(), NodeKey.generate()
    box = _seal(fra)
    with pytest.raises(SecretsError, match="not sealed for"):
        open_for_node(box, key=ams, location="fra", function="api", generation=2)


@pytest.mark.parametrize(
    ("location", "function", "generation"),
    [("ams", "api", 2), ("fra", "other", 2), ("fra", "api", 1)],
)
def test_box_is_bound_to_location_function_generation(
    location: str, function: str, generation: int
) -> None:
    node = NodeKey.generate()
    with pytest.raises(SecretsError):
        open_for_node(
            _seal(node), key=node, location=location, function=function, generation=generation
        )


def test_malformed_boxes_and_keys_are_refused() -> None:
    node = NodeKey.generate()
    with pytest.raises(SecretsError, match="base64"):
        open_for_node("!!", key=node, location="fra", function="api", generation=2)
    with pytest.raises(SecretsError, match="malformed"):
        open_for_node("AAAA", key=node, location="fra", function="api", generation=2)
    with pytest.raises(SecretsError, match="X25519"):
        seal_for_node(b"x", node_public_b64="AAAA", location="fra", function="f", generation=1)


def test_key_files_are_0600_stable_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "core" / "secrets.key"
    key = load_or_create_master_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    blob = key.encrypt(b"v", **AD)
    assert load_or_create_master_key(path).decrypt(blob, **AD) == b"v"
    path.chmod(0o644)
    with pytest.raises(SecretsError, match="chmod 600"):
        load_or_create_master_key(path)
    node_path = tmp_path / "node" / "secrets-node.key"
    node = load_or_create_node_key(node_path)
    assert stat.S_IMODE(node_path.stat().st_mode) == 0o600
    assert load_or_create_node_key(node_path).public_b64() == node.public_b64()
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    short.chmod(0o600)
    with pytest.raises(SecretsError, match="3 bytes"):
        load_or_create_master_key(short)


def test_reprs_hide_key_material() -> None:
    raw = os.urandom(KEY_BYTES)
    assert raw.hex() not in repr(MasterKey(raw))
    node = NodeKey.generate()
    assert node.private_bytes().hex() not in repr(node)
