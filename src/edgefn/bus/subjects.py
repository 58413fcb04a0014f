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
    "BUNDLES_OBJECT_STORE",
    "BUNDLE_ANNOUNCE",
    "BUNDLE_REQUEST_ALL",
    "DESIRED_BUCKET",
    "HEALTH_ALL",
    "JETSTREAM_DOMAIN",
    "LOAD_REPORT_ALL",
    "OBSERVED_BUCKET",
    "REGISTRY_BUCKET",
    "SECRETS_BUCKET",
    "SUBJECT_PREFIX",
    "TELEMETRY_ALL",
    "bundle_request_subject",
    "health_subject",
    "load_report_subject",
    "subject_token",
    "telemetry_subject",
]

DESIRED_BUCKET = "edgefn-desired"
OBSERVED_BUCKET = "edgefn-observed"
REGISTRY_BUCKET = "edgefn-registry"
# Function secrets, AES-GCM encrypted under the core's master key (edgefn.control.secrets).
SECRETS_BUCKET = "edgefn-secrets"
BUNDLES_OBJECT_STORE = "edgefn-bundles"

# The core's JetStream domain. Clients reach JetStream as ``$JS.edgefn.API.>`` so that the API and
# KV/object-store publishes cross a hub's leafnode (nats-server does not extend ``$JS.API.>`` or
# ``$KV.>`` over a leafnode when the domain is empty). See edgefn.bus.jetstream.
JETSTREAM_DOMAIN = "edgefn"

SUBJECT_PREFIX = "edgefn"
BUNDLE_REQUEST_ALL = f"{SUBJECT_PREFIX}.bundle.request.*"
# The control plane publishes every newly uploaded bundle here once; each region's cache stores it,
# so the bundle crosses each core-to-hub (long-haul) link once, before any node asks for it.
BUNDLE_ANNOUNCE = f"{SUBJECT_PREFIX}.bundle.announce"
HEALTH_ALL = f"{SUBJECT_PREFIX}.health.*"
LOAD_REPORT_ALL = f"{SUBJECT_PREFIX}.load.*"
TELEMETRY_ALL = f"{SUBJECT_PREFIX}.telemetry.*"

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def subject_token(value: str, *, what: str) -> str:
    """Return ``value`` if it can be one subject token, else raise :class:`BusError`."""
    if _TOKEN.fullmatch(value) is None:
        raise BusError(
            f"{what} {value!r} cannot be used in a NATS subject",
            hint="use 1-64 letters, digits, '-' or '_' (no dots, spaces, '*' or '>')",
        )
    return value


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
