"""What function code imports: Request, Response, Headers, Env, Context, ScheduledEvent and
``fetch``."""

from __future__ import annotations

from edgefn.sdk._caches import Cache, caches
from edgefn.sdk._durable import DurableObject, DurableObjectId, DurableObjectStorage
from edgefn.sdk._env import Context, Env
from edgefn.sdk._fetch import Subrequest, fetch
from edgefn.sdk._headers import Headers
from edgefn.sdk._kv import KVEntry, KVNamespace
from edgefn.sdk._origin import Origin
from edgefn.sdk._request import EdgeInfo, QueryParams, Request
from edgefn.sdk._response import Response
from edgefn.sdk._scheduled import ScheduledEvent

__all__ = [
    "Cache",
    "Context",
    "DurableObject",
    "DurableObjectId",
    "DurableObjectStorage",
    "EdgeInfo",
    "Env",
    "Headers",
    "KVEntry",
    "KVNamespace",
    "Origin",
    "QueryParams",
    "Request",
    "Response",
    "ScheduledEvent",
    "Subrequest",
    "caches",
    "fetch",
]
