"""What a node knows about one in-flight function request, shared by the request path (which
makes it), the node's host callbacks (KV calls and subrequests look it up by request id) and the
recorder (which reads its counts once the request is answered)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgefn.bundle import Manifest
from edgefn.edge.tracing import Span

__all__ = ["RequestContext"]


@dataclass(slots=True)
class RequestContext:
    """What the node knows about one in-flight request (for KV calls, subrequests, headers).

    ``response_headers`` collects headers that host services (the KV binding's session token,
    for example) add to the response while the function runs.
    """

    request_id: str
    function: str
    version: str
    key: str
    manifest: Manifest
    headers: list[tuple[str, str]]
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    # Host calls the worker made while the request was answered (telemetry rollups).
    kv_ops: int = 0
    # KV calls the replicated store failed (``unavailable`` / ``outcome_unknown`` results the
    # node itself gave): a 503 of that kind is the store's fault only when the node saw one, not
    # because a worker says so (runtime/sandbox.STORE_FAULT_KINDS).
    store_faults: int = 0
    subrequests: int = 0
    # The function's CPU time, as its worker reported it with the last frame (telemetry).
    cpu_us: int = 0
    # The request's invoke span: the parent of its subrequest and KV spans (None: not traced).
    span: Span | None = None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)
