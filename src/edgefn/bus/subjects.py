"""NATS subject and JetStream bucket names shared by the control plane, hubs and edge nodes.

Every name edgefn puts on the bus is built here, so a grep for a subject finds its one definition.
Subjects are dot-separated tokens; a token built from a location or region id must therefore be
a non-empty run of letters, digits, ``-`` and ``_`` (no dots, spaces or wildcards), which
:func:`subject_token` checks. The ``*_ALL`` constants are the matching wildcard subscriptions.
"""

from __future__ import annotations

import re

from edgefn.bus.errors import BusError

__all__ = [
    "AUDIT_BUCKET",
    "BUNDLES_OBJECT_STORE",
    "BUNDLE_ANNOUNCE",
    "BUNDLE_REQUEST_ALL",
    "CACHE_PURGE",
    "DEPLOYER_KEYS_BUCKET",
    "DESIRED_BUCKET",
    "DURABLE_ALL",
    "HEALTH_ALL",
    "JETSTREAM_DOMAIN",
    "KV_HOME_BUCKET",
    "KV_MEMBERS_BUCKET",
    "LOAD_REPORT_ALL",
    "OBSERVED_BUCKET",
    "QUEUE_ALL",
    "QUEUE_STREAM",
    "REGISTRY_BUCKET",
    "SECRETS_BUCKET",
    "SUBJECT_PREFIX",
    "TAIL_SESSIONS",
    "TELEMETRY_ALL",
    "TELEMETRY_STREAM",
    "TOKENS_BUCKET",
    "TRACES_ALL",
    "TRACES_STREAM",
    "bundle_request_subject",
    "cache_fetch_subject",
    "durable_subject",
    "health_subject",
    "kv_control_subject",
    "kv_replication_subject",
    "load_report_subject",
    "subject_token",
    "tail_event_subject",
    "telemetry_subject",
    "traces_subject",
]

DESIRED_BUCKET = "edgefn-desired"
OBSERVED_BUCKET = "edgefn-observed"
REGISTRY_BUCKET = "edgefn-registry"
# Function secrets, AES-GCM encrypted under the core's master key (edgefn.control.secrets).
SECRETS_BUCKET = "edgefn-secrets"
BUNDLES_OBJECT_STORE = "edgefn-bundles"
# Control-plane access (edgefn.control.access): hashed API tokens, registered deployer public keys
# (nodes read this one to verify bundles), and the audit log. Only the core should write them.
TOKENS_BUCKET = "edgefn-tokens"
DEPLOYER_KEYS_BUCKET = "edgefn-deployer-keys"
AUDIT_BUCKET = "edgefn-audit"
# The strong-consistency home of every KV namespace: one bucket, keys ``<namespace>.<key>``. One
# bucket (not one per namespace) so that a node's NATS permissions can grant exactly it: a
# wildcard cannot match part of a bucket name (see edgefn.bus.permissions).
KV_HOME_BUCKET = "edgefn-kvhome"
KV_MEMBERS_BUCKET = "edgefn-kv-members"

# The core's JetStream domain. Clients reach JetStream as ``$JS.edgefn.API.>`` so that the API and
# KV/object-store publishes cross a hub's leafnode (nats-server does not extend ``$JS.API.>`` or
# ``$KV.>`` over a leafnode when the domain is empty). See edgefn.bus.jetstream.
JETSTREAM_DOMAIN = "edgefn"

SUBJECT_PREFIX = "edgefn"
BUNDLE_REQUEST_ALL = f"{SUBJECT_PREFIX}.bundle.request.*"
# The control plane publishes every newly uploaded bundle here once; each region's cache stores it,
# so the bundle crosses each core-to-hub (long-haul) link once, before any node asks for it.
BUNDLE_ANNOUNCE = f"{SUBJECT_PREFIX}.bundle.announce"
# Edge-cache purges (edgefn.planet.cache_tier): only the control plane publishes; every node and
# region tier subscribes.
CACHE_PURGE = f"{SUBJECT_PREFIX}.cache.purge"
HEALTH_ALL = f"{SUBJECT_PREFIX}.health.*"
LOAD_REPORT_ALL = f"{SUBJECT_PREFIX}.load.*"
TELEMETRY_ALL = f"{SUBJECT_PREFIX}.telemetry.*"
# The core's stream of node rollups (edgefn.control.telemetry_ingest): nodes publish to it on
# their own telemetry subject and get an acknowledgement once the rollup is stored.
TELEMETRY_STREAM = "EDGEFN_TELEMETRY"
# Kept traces (edgefn.control.trace_ingest): like rollups, each node publishes the spans of its
# kept traces on its own location's subject into the core's stream.
TRACES_ALL = f"{SUBJECT_PREFIX}.traces.*"
TRACES_STREAM = "EDGEFN_TRACES"
# Live tail (edgefn.observe.tail): the core announces tail sessions here (only ``control`` may
# publish it); nodes answer on ``tail_event_subject(location, session)``.
TAIL_SESSIONS = f"{SUBJECT_PREFIX}.tailctl"

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def subject_token(value: str, *, what: str) -> str:
    """Return ``value`` if it can be one subject token, else raise :class:`BusError`."""
    if _TOKEN.fullmatch(value) is None:
        raise BusError(
            f"{what} {value!r} cannot be used in a NATS subject",
            hint="use 1-64 letters, digits, '-' or '_' (no dots, spaces, '*' or '>')",
        )
    return value


def durable_subject(location: str) -> str:
    """Subject on which a node answers requests for the durable objects it is the home of."""
    return f"{SUBJECT_PREFIX}.do.{subject_token(location, what='location')}"


DURABLE_ALL = f"{SUBJECT_PREFIX}.do.*"


def cache_fetch_subject(region: str) -> str:
    """Subject on which a region's edge-cache tier answers its nodes' location-tier misses."""
    return f"{SUBJECT_PREFIX}.cache.fetch.{subject_token(region, what='region')}"


def bundle_request_subject(region: str) -> str:
    """Subject on which a region's hub answers bundle fetches from its edge nodes."""
    return f"{SUBJECT_PREFIX}.bundle.request.{subject_token(region, what='region')}"


def health_subject(location: str) -> str:
    """Subject on which a location's node publishes its health beacons."""
    return f"{SUBJECT_PREFIX}.health.{subject_token(location, what='location')}"


def load_report_subject(location: str) -> str:
    """Subject on which a location's node publishes its load reports."""
    return f"{SUBJECT_PREFIX}.load.{subject_token(location, what='location')}"


def telemetry_subject(location: str) -> str:
    """Subject on which a location's node streams telemetry rollups."""
    return f"{SUBJECT_PREFIX}.telemetry.{subject_token(location, what='location')}"


def traces_subject(location: str) -> str:
    """Subject on which a location's node ships the spans of its kept traces."""
    return f"{SUBJECT_PREFIX}.traces.{subject_token(location, what='location')}"


def _token_or_wildcard(value: str, *, what: str) -> str:
    return value if value == "*" else subject_token(value, what=what)


def kv_replication_subject(namespace: str, origin: str) -> str:
    """Subject of the KV writes of ``origin`` in ``namespace`` (captured by its stream).

    ``*`` is accepted for either token (subscriptions and permissions).
    """
    ns = _token_or_wildcard(namespace, what="KV namespace")
    return f"{SUBJECT_PREFIX}.kv.{ns}.{_token_or_wildcard(origin, what='KV origin')}"


def kv_control_subject(namespace: str, to: str, sender: str) -> str:
    """Subject of KV control messages from ``sender`` to replica ``to`` (``_all``: everyone).

    The sender is a subject token so that NATS permissions can bind it to the sender's identity
    and the receiver can check it against the message. ``*`` is accepted for any token.
    """
    ns = _token_or_wildcard(namespace, what="KV namespace")
    dest = _token_or_wildcard(to, what="KV replica")
    return f"{SUBJECT_PREFIX}.kvctl.{ns}.{dest}.{_token_or_wildcard(sender, what='KV sender')}"


def tail_event_subject(location: str, session: str) -> str:
    """Subject of the tail events a location's node sends to one tail session.

    ``*`` is accepted for either token (the core subscribes to ``tail_event_subject("*", s)``;
    a node's publish permission is ``tail_event_subject(loc, "*")``).
    """
    loc = _token_or_wildcard(location, what="location")
    return f"{SUBJECT_PREFIX}.tail.{loc}.{_token_or_wildcard(session, what='tail session')}"


# Queues (edgefn.edge.queues): one stream, subject ``edgefn.q.<queue>.<partition>``. Nodes publish
# producers' messages and dead letters there; the control API publishes `edgefn queues send`.
QUEUE_STREAM = "EDGEFN_Q"
QUEUE_ALL = f"{SUBJECT_PREFIX}.q.>"
