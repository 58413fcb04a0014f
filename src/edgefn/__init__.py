"""edgefn: Python edge functions at many locations.

Function code imports from here: ``from edgefn import Request, Response, fetch``.
"""

from __future__ import annotations

from edgefn.errors import (
    EdgefnError,
    EgressDeniedError,
    FetchError,
    FetchTimeoutError,
    InvalidURLError,
    KVConflict,
    KVError,
    KVLimitError,
    KVOutcomeUnknown,
    KVUnavailable,
    ResponseTooLargeError,
    SubrequestLimitError,
)
from edgefn.sdk import (
    Cache,
    Context,
    DurableObject,
    DurableObjectId,
    DurableObjectStorage,
    EdgeInfo,
    Env,
    Headers,
    KVEntry,
    KVNamespace,
    Origin,
    QueryParams,
    Request,
    Response,
    ScheduledEvent,
    caches,
    fetch,
)

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "Context",
    "DurableObject",
    "DurableObjectId",
    "DurableObjectStorage",
    "EdgeInfo",
    "EdgefnError",
    "EgressDeniedError",
    "Env",
    "FetchError",
    "FetchTimeoutError",
    "Headers",
    "InvalidURLError",
    "KVConflict",
    "KVEntry",
    "KVError",
    "KVLimitError",
    "KVNamespace",
    "KVOutcomeUnknown",
    "KVUnavailable",
    "Origin",
    "QueryParams",
    "Request",
    "Response",
    "ResponseTooLargeError",
    "ScheduledEvent",
    "SubrequestLimitError",
    "__version__",
    "caches",
    "fetch",
]
