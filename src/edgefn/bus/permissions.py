"""NATS users of a planet and each role's least-privilege permissions (pure).

Every process that talks NATS authenticates as one :class:`NatsUser`; anonymous clients are refused
(no ``no_auth_user``). The core server knows ``control``, ``admin`` and one leafnode user per hub
(``leaf-<region>``); each hub knows its region's bundle cache (``cache-<region>``) and its nodes
(``node-<location>``). Permissions are rendered from the user's kind, so the table lives here and
nowhere else (docs/design/0007-backbone.md copies it):

* ``control`` — the core services: everything. Only it may write desired state.
* ``admin`` — tooling (``edgefn bench``): everything except writing desired or observed state,
  publishing nodes' beacons, telemetry or traces and announcing tail sessions (it cannot steer a rollout,
  the forwarding tables or the statistics, nor make nodes send request data).
* ``leaf-<region>`` — a hub's leafnode connection to the core: no subject permissions of its own;
  the hub enforces its clients' permissions before anything reaches the leafnode.
* ``cache-<region>`` — reads the bundle object store, answers ``edgefn.bundle.request.<region>``
  and its region's edge-cache tier ``edgefn.cache.fetch.<region>``; receives ``edgefn.cache.purge``.
* ``node-<loc>`` — publishes only subjects that carry its own location: beacons
  (``edgefn.health.<loc>``, ``edgefn.load.<loc>``, ``edgefn.telemetry.<loc>``), its kept traces
  (``edgefn.traces.<loc>``), its tail events
  (``edgefn.tail.<loc>.<session>``), its region's cache tier (``edgefn.cache.fetch.<region>``),
  durable objects' requests to their homes (``edgefn.do.<loc>``, any location), its observed state
  (``$KV.edgefn-observed.<loc>``), KV replication (``edgefn.kv.<ns>.<loc>``), KV control messages
  it sends (``edgefn.kvctl.<ns>.<to>.<loc>``) and its KV membership key; plus the JetStream API
  calls it needs and the strong-KV home bucket. It subscribes to its own inbox, the beacons, the
  KV control messages addressed to it, the tail session announcements (``edgefn.tailctl``) and
  cache purges (``edgefn.cache.purge``), both of which only ``control`` publishes, and requests
  for the durable objects it is the home of (``edgefn.do.<own loc>``). It never writes desired state.

Every client uses the inbox prefix ``_INBOX.<user>`` (:func:`inbox_prefix`) and may subscribe only
to its own inboxes, so no node can read another process's JetStream replies. Replies to requests a
client received (JetStream acks, flow control, bundle chunks) use ``allow_responses`` instead of a
publish grant on ``_INBOX.>``.

What could not be narrowed (NATS wildcards match whole tokens only): a node may create any stream
(``STREAM.CREATE.*``: the KV stream ``EDGEFN_KV_<ns>`` is created on first use of a namespace) and
consumers on any stream, read stream info, and write any key of the strong-KV home bucket (that is
user data of every namespace). Reads of desired and observed state are not confidential.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from edgefn.bus.subjects import (
    BUNDLE_ANNOUNCE,
    BUNDLES_OBJECT_STORE,
    CACHE_PURGE,
    DESIRED_BUCKET,
    DURABLE_ALL,
    HEALTH_ALL,
    JETSTREAM_DOMAIN,
    KV_HOME_BUCKET,
    KV_MEMBERS_BUCKET,
    LOAD_REPORT_ALL,
    OBSERVED_BUCKET,
    QUEUE_ALL,
    REGISTRY_BUCKET,
    TAIL_SESSIONS,
    TELEMETRY_ALL,
    TRACES_ALL,
    bundle_request_subject,
    cache_fetch_subject,
    durable_subject,
    health_subject,
    kv_control_subject,
    kv_replication_subject,
    load_report_subject,
    subject_token,
    tail_event_subject,
    telemetry_subject,
    traces_subject,
)

__all__ = [
    "NatsUser",
    "UserKind",
    "inbox_prefix",
    "render_permissions",
    "render_users",
]

UserKind = Literal["control", "admin", "leaf", "cache", "node"]

_API = f"$JS.{JETSTREAM_DOMAIN}.API"
_NAME = re.compile(r"[a-z]+(-[A-Za-z0-9_-]{1,64})?")


@dataclass(frozen=True, slots=True)
class NatsUser:
    """One NATS identity: ``kind`` decides its permissions; ``scope`` is its region or location.

    ``region`` is set for nodes (the hub whose bundle cache they ask).
    """

    kind: UserKind
    password: str
    scope: str = ""
    region: str = ""

    def __post_init__(self) -> None:
        assert len(self.password) >= 16, "use a random password of at least 16 characters"
        if self.kind in ("leaf", "cache", "node"):
            subject_token(self.scope, what=f"{self.kind} user scope")
        if self.kind == "node":
            subject_token(self.region, what="node region")

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.scope}" if self.scope else self.kind


def inbox_prefix(user: str) -> str:
    """The inbox prefix a client of ``user`` must use (it may subscribe only below it)."""
    assert _NAME.fullmatch(user), user
    return f"_INBOX.{user}"


def _kv_put(bucket: str, key: str) -> list[str]:
    # The domain-prefixed form crosses a leafnode (clients at a hub); the plain form is what a
    # client at the core may also use. Both are listed so neither is a way around the other.
    return [f"{_API}.$KV.{bucket}.{key}", f"$KV.{bucket}.{key}"]


def _protected_writes() -> list[str]:
    return [
        *_kv_put(DESIRED_BUCKET, ">"),
        *_kv_put(OBSERVED_BUCKET, ">"),
        *_kv_put(REGISTRY_BUCKET, ">"),
        HEALTH_ALL,
        LOAD_REPORT_ALL,
        # Rollups are what a location served: only that location's node speaks for it.
        TELEMETRY_ALL,
        TRACES_ALL,  # spans, like rollups, are a location's own account of what it served
        TAIL_SESSIONS,  # tail sessions make nodes send request data: the core's alone
        CACHE_PURGE,  # purges go through the control API (authenticated, per function)
        f"{_API}.STREAM.DELETE.KV_{DESIRED_BUCKET}",
        f"{_API}.STREAM.PURGE.KV_{DESIRED_BUCKET}",
        f"{_API}.STREAM.UPDATE.KV_{DESIRED_BUCKET}",
    ]


def _js_read(stream: str) -> list[str]:
    return [
        f"{_API}.STREAM.INFO.{stream}",
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}.>",
        f"{_API}.CONSUMER.CREATE.{stream}",
        f"{_API}.CONSUMER.CREATE.{stream}.>",
        f"{_API}.CONSUMER.INFO.{stream}.*",
        f"{_API}.CONSUMER.DELETE.{stream}.*",
    ]


def _node_publish(user: NatsUser) -> list[str]:
    loc = user.scope
    return [
        health_subject(loc),
        load_report_subject(loc),
        telemetry_subject(loc),
        traces_subject(loc),
        tail_event_subject(loc, "*"),
        bundle_request_subject(user.region),
        cache_fetch_subject(user.region),
        DURABLE_ALL,  # a durable object's request goes to its home, any location
        QUEUE_ALL,  # producers' messages and dead letters, for any queue a manifest names
        kv_replication_subject("*", loc),
        kv_control_subject("*", "*", loc),
        *_kv_put(OBSERVED_BUCKET, loc),
        *_kv_put(KV_MEMBERS_BUCKET, f"*.{loc}"),
        *_kv_put(KV_HOME_BUCKET, ">"),
        f"{_API}.INFO",
        f"{_API}.STREAM.INFO.*",
        f"{_API}.STREAM.CREATE.*",
        f"{_API}.STREAM.MSG.GET.*",
        f"{_API}.DIRECT.GET.*",
        f"{_API}.DIRECT.GET.*.>",
        f"{_API}.CONSUMER.CREATE.*",
        f"{_API}.CONSUMER.CREATE.*.>",
        f"{_API}.CONSUMER.DURABLE.CREATE.*.kv-{loc}",
        f"{_API}.CONSUMER.INFO.*.*",
        f"{_API}.CONSUMER.DELETE.*.*",
    ]


def render_permissions(user: NatsUser) -> dict[str, Any] | None:
    """The nats-server ``permissions`` block of ``user`` (``None``: no restriction)."""
    inbox = f"{inbox_prefix(user.name)}.>"
    if user.kind == "control":
        return None
    if user.kind == "leaf":
        return None
    if user.kind == "admin":
        return {
            "publish": {"allow": [">"], "deny": _protected_writes()},
            "subscribe": {"allow": [">"]},
        }
    if user.kind == "cache":
        request = bundle_request_subject(user.scope)
        return {
            # STREAM.NAMES: nats-py's object-store get looks its stream up by subject. Without it
            # a cache that missed a bundle's push could never read it from the core (seen in the
            # multi-host test, where a push was lost to a core-server kill).
            "publish": {
                "allow": [
                    f"{_API}.INFO",
                    f"{_API}.STREAM.NAMES",
                    *_js_read(f"OBJ_{BUNDLES_OBJECT_STORE}"),
                ]
            },
            "subscribe": {
                "allow": [
                    inbox,
                    BUNDLE_ANNOUNCE,
                    request,
                    f"{request}.stats",
                    cache_fetch_subject(user.scope),
                    CACHE_PURGE,
                ]
            },
            "allow_responses": True,
        }
    assert user.kind == "node", user.kind
    return {
        "publish": {"allow": _node_publish(user), "deny": [*_kv_put(DESIRED_BUCKET, ">")]},
        "subscribe": {
            "allow": [
                inbox,
                HEALTH_ALL,
                LOAD_REPORT_ALL,
                kv_control_subject("*", user.scope, "*"),
                kv_control_subject("*", "_all", "*"),
                TAIL_SESSIONS,
                CACHE_PURGE,
                durable_subject(user.scope),
            ]
        },
        "allow_responses": True,
    }


def render_users(users: tuple[NatsUser, ...]) -> list[dict[str, Any]]:
    """The ``users`` list of an ``authorization`` block."""
    names = [u.name for u in users]
    assert len(set(names)) == len(names), f"duplicate NATS users: {names}"
    out: list[dict[str, Any]] = []
    for user in users:
        entry: dict[str, Any] = {"user": user.name, "password": user.password}
        permissions = render_permissions(user)
        if permissions is not None:
            entry["permissions"] = permissions
        out.append(entry)
    return out
