"""The NATS backbone (nats-server processes, connections, JetStream, subjects) and link emulator."""

from __future__ import annotations

from edgefn.bus._ports import free_port
from edgefn.bus.errors import (
    BusConnectError,
    BusError,
    BusSetupError,
    LinkTableError,
    NatsServerNotFound,
    NatsServerStartError,
)
from edgefn.bus.jetstream import connect, ensure_kv, ensure_object_store, jetstream
from edgefn.bus.link_control import LinkControlClient
from edgefn.bus.link_emulator import Link, LinkStatistics
from edgefn.bus.link_group import LinkEmulatorGroup, LinkGroupStatistics
from edgefn.bus.links import (
    AddLink,
    CutLink,
    Heal,
    HealLink,
    LinkEvent,
    LinkInstruction,
    LinkState,
    LinkTable,
    LinkTableStatistics,
    Partition,
    SetDelay,
    SetLinkRtt,
)
from edgefn.bus.nats_config import ClusterConfig, CoreConfig, HubConfig, NatsConfig, render_config
from edgefn.bus.nats_server import NatsServer, NatsServerStatistics, find_nats_server
from edgefn.bus.subjects import (
    BUNDLES_OBJECT_STORE,
    DESIRED_BUCKET,
    JETSTREAM_DOMAIN,
    OBSERVED_BUCKET,
    REGISTRY_BUCKET,
    bundle_request_subject,
    health_subject,
    load_report_subject,
    telemetry_subject,
)

__all__ = [
    "BUNDLES_OBJECT_STORE",
    "DESIRED_BUCKET",
    "JETSTREAM_DOMAIN",
    "OBSERVED_BUCKET",
    "REGISTRY_BUCKET",
    "AddLink",
    "BusConnectError",
    "BusError",
    "BusSetupError",
    "ClusterConfig",
    "CoreConfig",
    "CutLink",
    "Heal",
    "HealLink",
    "HubConfig",
    "Link",
    "LinkControlClient",
    "LinkEmulatorGroup",
    "LinkEvent",
    "LinkGroupStatistics",
    "LinkInstruction",
    "LinkState",
    "LinkStatistics",
    "LinkTable",
    "LinkTableError",
    "LinkTableStatistics",
    "NatsConfig",
    "NatsServer",
    "NatsServerNotFound",
    "NatsServerStartError",
    "NatsServerStatistics",
    "Partition",
    "SetDelay",
    "SetLinkRtt",
    "bundle_request_subject",
    "connect",
    "ensure_kv",
    "ensure_object_store",
    "find_nats_server",
    "free_port",
    "health_subject",
    "jetstream",
    "load_report_subject",
    "render_config",
    "telemetry_subject",
]
