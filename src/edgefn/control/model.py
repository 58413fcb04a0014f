"""Wire types between the control plane and edge nodes: desired and observed state, as JSON.

The reconciler writes one ``DesiredState`` per location to the ``edgefn-desired`` KV bucket
(key = location id); each node writes one ``ObservedState`` to ``edgefn-observed`` (same key).
Both are msgspec Structs encoded as JSON, so a node can decode them with ``decode_desired`` /
``decode_observed`` and a human can read them with ``nats kv get``.

``DesiredState.generation`` increases every time the content for that location changes; a node
applies the state and reports the generation it applied, which gives the reconciler a version
vector ``{location: applied generation}``. Within a function's ``versions`` the weights are the
traffic split at that location and sum to 1; ``signatures`` maps each referenced sha256 to its
base64 Ed25519 signature (see ``edgefn.bundle.signing``) so a node can verify what it fetches.
A function with secrets also carries ``secrets_generation`` and ``secrets``: its values sealed
for that location's key (``ObservedState.secrets_key``), never in clear (docs/design/0013).

Example desired state (JSON)::

    {"generation": 7, "location": "fra",
     "functions": {"hello": {"versions": [["3f2a9c...", "3f2a9c<64 hex>", 0.9],
                                          ["b81e07...", "b81e07<64 hex>", 0.1]]}},
     "signatures": {"3f2a9c<64 hex>": "base64..."}}

Observed stats per version are cumulative since the node loaded that version (requests,
errors), with latency percentiles over the node's recent window. ``errors`` lists versions the
node could not load (bad hash, bad signature, import error) with the reason.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from edgefn.errors import ProtocolError

__all__ = [
    "MAX_STATE_BYTES",
    "DesiredState",
    "FunctionDesired",
    "ObservedState",
    "VersionRef",
    "VersionStats",
    "VersionWeight",
    "decode_desired",
    "decode_observed",
    "encode_desired",
    "encode_observed",
]

# A location's state is small (a few KiB per function); refusing larger payloads bounds memory.
MAX_STATE_BYTES = 4 * 1024 * 1024


class VersionWeight(NamedTuple):
    """One version served at a location and its share of the traffic there."""

    version_id: str
    sha256: str
    weight: float


class VersionRef(msgspec.Struct, frozen=True):
    """A bundle version as the reconciler knows it."""

    version_id: str
    sha256: str
    signature: str = ""
    # The function's secrets generation this deployment carries (0: the function has none).
    secrets_generation: int = 0


class FunctionDesired(msgspec.Struct, frozen=True):
    versions: tuple[VersionWeight, ...]
    # Secrets: the generation, and the values sealed for this location only (base64 box, see
    # edgefn.secrets.crypto). The reconciler leaves ``secrets`` empty; the control service seals.
    secrets_generation: int = 0
    secrets: str = ""


class DesiredState(msgspec.Struct, frozen=True):
    generation: int
    functions: dict[str, FunctionDesired]
    location: str = ""
    signatures: dict[str, str] = msgspec.field(default_factory=dict)


class VersionStats(msgspec.Struct, frozen=True):
    requests: int = 0
    errors: int = 0
    latency_ms_p50: float = 0.0
    latency_ms_p99: float = 0.0


class NodeResources(msgspec.Struct, frozen=True, omit_defaults=True):
    """A location host's resources (``planet/resources.py``); ``None`` or empty: not measured
    (``unavailable`` says why)."""

    at_ms: int = 0
    cpu_cores: int = 0
    # Percent of one core used by the node's processes since the previous sample.
    cpu_percent: float | None = None
    processes: int = 0
    # Resident memory of the node's processes, summed (pages shared after fork count per process).
    rss_mb: float | None = None
    host_memory_mb: float | None = None
    host_memory_available_mb: float | None = None
    disk_mb: float | None = None
    disk_free_mb: float | None = None
    open_sockets: int | None = None
    thermal_c: dict[str, float] = msgspec.field(default_factory=dict)
    # What the traffic driver throttles on (routing/thermal.py): the reading (a sensor's, or
    # `edgefn net heat`'s emulated one), whether the location is hot, its admission capacity.
    throttle_c: float | None = None
    hot: bool = False
    capacity: float = 1.0
    # The location's thermal budget (its topology's thermal_soft_c / thermal_hard_c): throttled
    # from soft, at the floor from hard. None: not reported (a node without a traffic driver).
    soft_c: float | None = None
    hard_c: float | None = None
    power_w: dict[str, float] = msgspec.field(default_factory=dict)
    unavailable: tuple[str, ...] = ()


class ObservedState(msgspec.Struct, frozen=True):
    location: str
    generation: int
    functions: dict[str, dict[str, VersionStats]] = msgspec.field(default_factory=dict)
    errors: dict[str, str] = msgspec.field(default_factory=dict)
    at_ms: int = 0
    region: str = ""
    url: str = ""
    # The node's X25519 public key (base64) that the control plane seals its secrets to.
    secrets_key: str = ""
    # The location's host: CPU, memory, disk, sockets, temperature, power (observe/resources.py).
    resources: NodeResources | None = None
    # Where the location is (its entry of the planet's locations file), for the dashboard's map;
    # None: the node has no locations file. The core draws only valid positions (dashboard_view).
    lat: float | None = None
    lon: float | None = None


_desired_decoder = msgspec.json.Decoder(DesiredState)
_observed_decoder = msgspec.json.Decoder(ObservedState)
_encoder = msgspec.json.Encoder()


def encode_desired(state: DesiredState) -> bytes:
    return _encoder.encode(state)


def encode_observed(state: ObservedState) -> bytes:
    return _encoder.encode(state)


def _decode(decoder: msgspec.json.Decoder[object], data: bytes, what: str) -> object:
    if len(data) > MAX_STATE_BYTES:
        raise ProtocolError(f"{what} is {len(data)} bytes, over {MAX_STATE_BYTES}")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as err:
        raise ProtocolError(f"malformed {what}: {err}", hint="check the writer's version") from None
    except msgspec.DecodeError as err:
        raise ProtocolError(f"{what} is not JSON: {err}", hint="check the writer") from None


def decode_desired(data: bytes) -> DesiredState:
    """Decode a desired-state JSON document; raises ``ProtocolError`` if malformed."""
    state = _decode(_desired_decoder, data, "desired state")  # type: ignore[arg-type]
    assert isinstance(state, DesiredState)
    return state


def decode_observed(data: bytes) -> ObservedState:
    """Decode an observed-state JSON document; raises ``ProtocolError`` if malformed."""
    state = _decode(_observed_decoder, data, "observed state")  # type: ignore[arg-type]
    assert isinstance(state, ObservedState)
    return state
