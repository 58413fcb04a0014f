"""The node's own ``/_edgefn/*`` endpoints, and who may reach each of them on which listener.

* **Public listener** (:meth:`NodeEndpoints.public`): ``/_edgefn/health`` for anyone;
  ``/_edgefn/metrics`` only with the metrics token (``authorization: Bearer <token>``, compared in
  constant time) or a planet-internal signature of the GET; every other ``/_edgefn/*`` path 404
  ``{"error": "not_found"}``.
* **Internal listener** (:meth:`NodeEndpoints.internal`, mounted by the node behind
  :class:`~edgefn._internal_auth.InternalGuard`, so nothing unsigned reaches it):
  ``/_edgefn/kv*`` and ``/_edgefn/kvstate/*`` go to the KV service's ASGI app,
  ``/_edgefn/thermal`` sets an emulated temperature (``edgefn net heat``), plus health and metrics.

Health answers 200 ``{"status": "ok", ...}`` once the node is ready, else 503 ``"starting"``, with
the active versions, uptime and the sandbox isolation in force. Metrics are the Prometheus text of
:class:`~edgefn.observe.NodeMetrics`, with the pool's per-version worker gauges refreshed first.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable

from edgefn._internal_auth import request_target, wall_ms
from edgefn.edge.listener import ASGIApp, Receive, Scope, Send
from edgefn.edge.request_io import decode_headers, respond
from edgefn.observe import NodeMetrics
from edgefn.routing.internal_auth import INTERNAL_AUTH_HEADER, AuthCheck, InternalVerifier
from edgefn.routing.thermal import ThermalState
from edgefn.runtime.sandbox import SandboxPool

__all__ = ["NodeEndpoints"]

THERMAL_BODY_MAX = 1024


class NodeEndpoints:
    """Health, metrics and the internal KV mount of one node.

    ``ready`` and ``functions`` are asked at every request (readiness changes once, the
    function table at every deploy); the rest is fixed at construction.
    """

    def __init__(
        self,
        *,
        location: str,
        region: str,
        pool: SandboxPool,
        metrics: NodeMetrics,
        ready: Callable[[], bool],
        functions: Callable[[], dict[str, list[str]]],
        kv_http: ASGIApp | None,
        metrics_token: str | None,
        internal_secret: bytes | None,
        heat: Callable[[float | None], ThermalState] | None = None,
    ) -> None:
        self.location = location
        self.region = region
        self.pool = pool
        self.metrics = metrics
        self.kv_http = kv_http
        self._heat = heat
        self._ready = ready
        self._functions = functions
        self._metrics_token = metrics_token
        self._metrics_verifier = InternalVerifier(internal_secret) if internal_secret else None
        self.started_at = time.monotonic()

    async def public(self, scope: Scope, send: Send) -> None:
        """A ``/_edgefn/*`` request on the public listener."""
        path: str = scope["path"]
        if path == "/_edgefn/health" or (
            path == "/_edgefn/metrics" and self._metrics_allowed(scope)
        ):
            await self._serve(scope, send)
        else:
            await respond(send, 404, {"error": "not_found"})

    async def internal(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The internal listener's app (behind InternalGuard): KV endpoints, health, metrics."""
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_edgefn/kv") and self.kv_http is not None:
            await self.kv_http(scope, receive, send)
            return
        if path == "/_edgefn/thermal":
            await self._thermal(scope, receive, send)
            return
        await self._serve(scope, send)

    async def _thermal(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST {"celsius": 92.5}`` emulates this location's temperature (``null``: its sensors
        again); ``edgefn net heat`` sends it through the supervisor. Answers the thermal state."""
        if self._heat is None:
            await respond(
                send, 404, {"error": "not_found", "hint": "this node has no traffic driver"}
            )
            return
        if scope["method"] != "POST":
            await respond(send, 405, {"error": "method_not_allowed", "allow": "POST"})
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > THERMAL_BODY_MAX or not message.get("more_body", False):
                break
        try:
            celsius = json.loads(body)["celsius"]
            if celsius is not None and (
                isinstance(celsius, bool) or not isinstance(celsius, int | float)
            ):
                raise ValueError(f"celsius must be a number or null, not {celsius!r}")
            state = self._heat(None if celsius is None else float(celsius))
        except (ValueError, KeyError, TypeError) as err:
            await respond(
                send,
                400,
                {
                    "error": "bad_request",
                    "message": str(err),
                    "hint": 'send {"celsius": 90} or {"celsius": null}',
                },
            )
            return
        await respond(
            send,
            200,
            {
                "location": self.location,
                "celsius": state.celsius,
                "hot": state.hot,
                "capacity": state.capacity,
            },
        )

    def _metrics_allowed(self, scope: Scope) -> bool:
        """A bearer metrics token, or a planet-internal signature of this GET."""
        headers = decode_headers(scope["headers"])
        auth = next((v for k, v in headers if k == "authorization"), "")
        scheme, _, token = auth.partition(" ")
        if self._metrics_token and scheme.lower() == "bearer":
            return hmac.compare_digest(token.strip().encode(), self._metrics_token.encode())
        signed = next((v for k, v in headers if k == INTERNAL_AUTH_HEADER), None)
        if self._metrics_verifier is None or signed is None:
            return False
        check = self._metrics_verifier.verify(
            signed,
            method=scope["method"],
            target=request_target(scope),
            body=b"",
            now_ms=wall_ms(),
        )
        return check is AuthCheck.VALID

    async def _serve(self, scope: Scope, send: Send) -> None:
        path = scope["path"]
        if path == "/_edgefn/health":
            ready = self._ready()
            body = {
                "status": "ok" if ready else "starting",
                "location": self.location,
                "region": self.region,
                "functions": self._functions(),
                "uptime_s": round(time.monotonic() - self.started_at, 3),
                "isolation": {"mode": self.pool.isolation_mode, **self.pool.layers},
            }
            await respond(send, 200 if ready else 503, body)
        elif path == "/_edgefn/metrics":
            self._refresh_pool_gauges()
            data = self.metrics.render()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4")],
                }
            )
            await send({"type": "http.response.body", "body": data})
        else:
            await respond(send, 404, {"error": "not_found"})

    def _refresh_pool_gauges(self) -> None:
        stats = self.pool.statistics().pool
        self.metrics.pool_workers.clear()
        for key, n in stats.per_key.items():
            fn, _, version = key.partition("@")
            self.metrics.pool_workers.labels(self.location, fn, version).set(n)
