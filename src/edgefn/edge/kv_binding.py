"""The node side of KV: one replica per namespace at this location, started and left as needed.

How it works. :class:`KVService` owns one :class:`~edgefn.state.driver.KVDriver` (a replica of the
namespace, an SQLite file under ``<state_dir>/kv/`` and a NATS connection through the location's
hub) per namespace that this location's functions bind. Drivers start when a function binding the
namespace is activated (``sync_namespaces``, called every second by ``run``) or on first use; they
recover from disk and serve local operations at once, even while NATS cannot be reached. When no
function here binds a namespace any more, its replica leaves the namespace (see
``edgefn.state.membership``); the SQLite file stays, holding only the replica's counters.

The service serves two callers over those drivers, each in its own module:

- :meth:`KVService.handle_call` is the node's ``kv_handler``: a worker's ``KVCall`` carried out by
  ``edge.kv_calls`` (binding → namespace, argument checks and encodings from ``edge.kv_codec``,
  signed session tokens, error kinds);
- :meth:`KVService.asgi` is ``edge.kv_http``: ``/_edgefn/kv/<ns>[/<key>]`` and
  ``/_edgefn/kvstate/<ns>`` for ``edgefn kv`` and the tests, on the internal listener only.

Session tokens are signed with the planet secret, so every location accepts the others' tokens;
without one (a lone node) with a key of this process.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefn.edge.kv_calls import KVCalls
from edgefn.edge.kv_codec import (
    check_namespace,
    decode_value,
    encode_value,
    open_session,
    sign_session,
)
from edgefn.edge.kv_http import KVHttp, Receive, Scope, Send
from edgefn.errors import KVError, KVLimitError
from edgefn.runtime import protocol as p
from edgefn.state import Replica, ReplicaConfig
from edgefn.state.driver import HOME_WAIT_S, KVDriver
from edgefn.state.store import SqliteStore

if TYPE_CHECKING:
    from edgefn.edge.node import EdgeNode, RequestContext

__all__ = [
    "NAMESPACES_MAX",
    "KVService",
    "KVServiceStatistics",
    "decode_value",
    "encode_value",
    "open_session",
    "sign_session",
]

NAMESPACES_MAX = 64
_SYNC_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class KVServiceStatistics:
    location: str
    namespaces: tuple[str, ...]
    calls: int
    call_errors: int
    http_requests: int
    sessions_rejected: int


class KVService:
    """KV replicas of one location; a node is built with ``kv_handler=service.handle_call``."""

    def __init__(
        self,
        *,
        location: str,
        state_dir: Path,
        nats_urls: list[str],
        config: dict[str, int] | None = None,
        session_secret: bytes | None = None,
        connect_wait_s: float = HOME_WAIT_S,
        clock_skew_ms: int = 0,
    ) -> None:
        self.location = location
        self.dir = state_dir / "kv"
        self.nats_urls = nats_urls
        self.config = dict(config or {})
        self.connect_wait_s = connect_wait_s
        self.clock_skew_ms = clock_skew_ms
        self.drivers: dict[str, KVDriver] = {}
        self._starting: dict[str, asyncio.Future[KVDriver]] = {}
        self._swept = False  # replicas left on disk by an earlier run (see _reopen_unwanted)
        # Signs session tokens; the planet secret, so every location accepts the others' tokens.
        # Without one (a lone node) tokens are still signed, with a key of this process.
        session_key = session_secret or os.urandom(32)
        self._calls = KVCalls(driver_for=self.driver, session_key=session_key)
        self._http = KVHttp(location=location, calls=self._calls, driver_for=self.driver)

    # -- lifecycle -------------------------------------------------------------------------
    async def driver(self, namespace: str) -> KVDriver:
        """The running driver of ``namespace``, started on first use."""
        if namespace in self.drivers:
            return self.drivers[namespace]
        if namespace in self._starting:
            return await self._starting[namespace]
        check_namespace(namespace)
        if len(self.drivers) + len(self._starting) >= NAMESPACES_MAX:
            raise KVLimitError(
                f"location {self.location} already serves {NAMESPACES_MAX} KV namespaces; "
                f"cannot open {namespace!r}",
                hint="bind fewer namespaces in the functions deployed here",
            )
        future: asyncio.Future[KVDriver] = asyncio.get_running_loop().create_future()
        self._starting[namespace] = future
        try:
            driver = self._make(namespace)
            await driver.start(wait_connected=False)
            self.drivers[namespace] = driver
            future.set_result(driver)
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # Retrieved here so an unawaited future does not warn.
            raise
        finally:
            self._starting.pop(namespace, None)
        return driver

    def _make(self, namespace: str) -> KVDriver:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = ReplicaConfig(replica_id=self.location, replicas=(self.location,), **self.config)
        return KVDriver(
            namespace=namespace,
            replica=Replica(config),
            store=SqliteStore(self.dir / f"{namespace}.sqlite3"),
            servers=self.nats_urls,
            connect_wait_s=self.connect_wait_s,
            clock_skew_ms=self.clock_skew_ms,
        )

    async def prepare(self, namespaces: Iterable[str], *, timeout_s: float) -> dict[str, str]:
        """Start the drivers of ``namespaces`` and wait (bounded) until each is connected.

        The node agent calls this before it reports a version deployed, so a function's
        replication path (stream consumer, home bucket) is in place when ``deploy --wait`` returns:
        its first write propagates as fast as later ones. Returns namespace → why it is not ready
        (empty when all are); the functions serve anyway, locally, and strong operations wait.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        problems: dict[str, str] = {}
        for namespace in sorted(set(namespaces)):
            try:
                driver = await self.driver(namespace)
                await driver.wait_connected(timeout_s=max(deadline - loop.time(), 0.001))
            except KVError as err:
                problems[namespace] = str(err)
        return problems

    async def sync_namespaces(self, node: EdgeNode) -> None:
        """Start a driver for every namespace that an active function here binds; once the node
        has loaded its functions, the replicas of the others leave (``KVDriver.leave``: only
        when that loses no write; until then they keep serving and it is asked again)."""
        wanted = {
            ns.namespace
            for fn in node.table.functions.values()
            for version in fn.versions
            for ns in version.manifest.kv_namespaces
        }
        for namespace in sorted(wanted - set(self.drivers)):
            try:
                await self.driver(namespace)
            except KVError as err:
                node.log.emit("kv", event="namespace_failed", namespace=namespace, error=str(err))
        if node.ready:  # before that, an empty function table says nothing
            if not self._swept:
                self._swept = True
                await self._reopen_unwanted(wanted, node)
            await self._leave_unwanted(wanted, node)

    async def _reopen_unwanted(self, wanted: set[str], node: EdgeNode) -> None:
        """Start the replicas still on disk that never left (the function moved away while
        this node was down), so that they leave now instead of being waited for forever."""
        for path in sorted(self.dir.glob("*.sqlite3")):
            namespace = path.stem
            if namespace in wanted or namespace in self.drivers or _left_on_disk(path):
                continue
            try:
                await self.driver(namespace)
            except KVError as err:
                node.log.emit("kv", event="namespace_failed", namespace=namespace, error=str(err))

    async def _leave_unwanted(self, wanted: set[str], node: EdgeNode) -> None:
        for namespace, driver in sorted(self.drivers.items()):
            if namespace in wanted and driver.left:
                # Wanted again after its replica left but before it deregistered: re-join
                # with a new driver (next sync).
                await driver.stop()
                del self.drivers[namespace]
            elif namespace in wanted:
                driver.stay()
            elif await driver.leave():
                del self.drivers[namespace]
                node.log.emit("kv", event="namespace_left", namespace=namespace)

    async def run(self, node: EdgeNode) -> None:
        """Keep drivers for the namespaces of the active functions (until cancelled)."""
        while True:
            await self.sync_namespaces(node)
            await asyncio.sleep(_SYNC_INTERVAL_S)

    async def stop(self) -> None:
        for driver in list(self.drivers.values()):
            await driver.stop()
        self.drivers.clear()

    def statistics(self) -> KVServiceStatistics:
        calls = self._calls
        return KVServiceStatistics(
            self.location,
            tuple(sorted(self.drivers)),
            calls=calls.calls,
            call_errors=calls.call_errors,
            http_requests=self._http.requests,
            sessions_rejected=calls.sessions_rejected,
        )

    # -- callers -----------------------------------------------------------------------------
    async def handle_call(self, ctx: RequestContext, call: p.KVCall) -> p.KVResult:
        """Carry out one ``env.<BINDING>.<op>(...)`` from a worker (see ``edge.kv_calls``)."""
        return await self._calls.handle_call(ctx, call)

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/_edgefn/kv/<ns>[/<key>]`` and ``/_edgefn/kvstate/<ns>``, for 127.0.0.1 only."""
        await self._http.asgi(scope, receive, send)

    async def _state(self, namespace: str) -> dict[str, Any]:
        """What ``/_edgefn/kvstate/<ns>`` answers (the integration tests read it directly)."""
        return await self._http.state(namespace)


def _left_on_disk(path: Path) -> bool:
    """The replica in ``path`` left its namespace (or the file cannot be read: nothing to do)."""
    try:
        store = SqliteStore(path)
    except KVError:
        return True
    try:
        return store.recover(0).meta.left
    except KVError:
        return True
    finally:
        store.close()
