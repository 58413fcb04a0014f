"""NATS connections and JetStream resources shared by the control plane, hubs and edge nodes.

Always get a JetStream context from :func:`jetstream` (never ``nc.jetstream()``): it addresses the
core's JetStream domain and prefixes KV and object-store publishes (``$KV.b.k`` becomes
``$JS.edgefn.API.$KV.b.k``), which is what lets a client connected to a regional hub, whose
leafnode does not carry ``$JS.API.>`` or ``$KV.>``, use the core's buckets. A client connected to
the core directly works the same way. Reads need nothing special: direct gets and consumer creation
go through the (prefixed) API, and consumers deliver to the client's ``_INBOX``, which does cross.

:func:`connect` opens a nats-py client that reconnects forever by default (an edge node must ride
out any partition), with a bounded wait between attempts; the *first* connection is retried until
``connect_deadline_s`` and then fails with :class:`BusConnectError` naming every URL tried.

:func:`connect` authenticates with ``creds`` (or the process default, see
edgefn.bus.credentials): user and password, the inbox prefix ``_INBOX.<user>`` that the user's
permissions allow it to subscribe to, and TLS verified against the planet CA when the credentials
name one (a server that requires TLS refuses a plaintext client).

:func:`ensure_kv` and :func:`ensure_object_store` open a bucket, creating it when missing. Several
processes may race to create the same bucket; JetStream accepts an identical create, and a loser
that sees "already exists" just opens it. A bucket that exists with a different history or replica
count raises :class:`BusSetupError` rather than silently running with the other settings (a caller
that cannot know the core's size passes ``replicas=None`` and adopts the bucket's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.errors import Error as JsError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from edgefn.bus.credentials import Credentials, default_credentials
from edgefn.bus.errors import BusConnectError, BusSetupError
from edgefn.bus.permissions import inbox_prefix
from edgefn.bus.subjects import JETSTREAM_DOMAIN, QUEUE_ALL, QUEUE_STREAM

__all__ = [
    "client_tls_context",
    "connect",
    "direct_get_batch",
    "ensure_kv",
    "ensure_object_store",
    "jetstream",
    "wait_jetstream",
]

Callback = Callable[[], Awaitable[None]]
ErrorCallback = Callable[[Exception], Awaitable[None]]

_CONNECT_RETRY_S = 0.2


async def _quiet_error_cb(_err: Exception) -> None:
    # nats-py's default callback logs every failed reconnect attempt at ERROR level; during an
    # emulated partition that is expected and would drown the log. Callers pass their own to see it.
    return None


async def connect(
    urls: str | Sequence[str],
    *,
    name: str,
    max_reconnect_attempts: int = -1,
    reconnect_time_wait_s: float = 0.5,
    connect_timeout_s: float = 2.0,
    connect_deadline_s: float = 10.0,
    ping_interval_s: float = 5.0,
    error_cb: ErrorCallback | None = None,
    disconnected_cb: Callback | None = None,
    reconnected_cb: Callback | None = None,
    creds: Credentials | None = None,
    no_echo: bool = False,
) -> Client:
    """Connect to NATS at ``urls``; retry the first connection until ``connect_deadline_s``.

    ``no_echo``: the server does not deliver this connection's own messages back to it.

    After the first connection, nats-py reconnects by itself: ``max_reconnect_attempts`` times
    (``-1``: forever) with ``reconnect_time_wait_s`` between rounds. ``ping_interval_s`` bounds how
    long a silently dead connection (a cut link that drops no packets) goes unnoticed: two missed
    pings.
    """
    servers = [urls] if isinstance(urls, str) else list(urls)
    assert servers, "connect() needs at least one URL"
    auth = _auth_options(creds if creds is not None else default_credentials())
    assert reconnect_time_wait_s > 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_deadline_s
    last: Exception | None = None
    while True:
        nc = Client()
        try:
            # nats-py applies max_reconnect_attempts to the first connection as well, so with -1
            # it would try forever: bound each round by what is left of our deadline.
            await asyncio.wait_for(
                nc.connect(
                    servers,
                    name=name,
                    max_reconnect_attempts=max_reconnect_attempts,
                    reconnect_time_wait=reconnect_time_wait_s,  # type: ignore[arg-type]
                    connect_timeout=connect_timeout_s,  # type: ignore[arg-type]
                    ping_interval=ping_interval_s,  # type: ignore[arg-type]
                    max_outstanding_pings=2,
                    allow_reconnect=True,
                    error_cb=error_cb if error_cb is not None else _quiet_error_cb,
                    disconnected_cb=disconnected_cb,
                    reconnected_cb=reconnected_cb,
                    no_echo=no_echo,
                    **auth,
                ),
                timeout=max(deadline - loop.time(), 0.01),
            )
            return nc
        except (TimeoutError, OSError, NatsError) as err:
            last = err
            await nc.close()
        if loop.time() + _CONNECT_RETRY_S >= deadline:
            break
        await asyncio.sleep(_CONNECT_RETRY_S)
    raise BusConnectError(
        f"client {name!r} could not connect to NATS at {', '.join(servers)} within "
        f"{connect_deadline_s:g}s (last error: {last!r})",
        hint="check that the server (or planet: `edgefn up`) is running and the URL is right",
    )


def client_tls_context(ca_file: Path) -> ssl.SSLContext:
    """A client TLS context that trusts only the planet CA (and checks the server's name/IP)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _auth_options(creds: Credentials | None) -> dict[str, Any]:
    if creds is None:
        return {}
    out: dict[str, Any] = {}
    if creds.user:  # An empty user is an anonymous client (only tests try that).
        out.update(user=creds.user, password=creds.password, inbox_prefix=inbox_prefix(creds.user))
    if creds.ca_file is not None:
        out["tls"] = client_tls_context(creds.ca_file)
    return out


class _DomainJetStream(JetStreamContext):
    """A JetStream context whose KV and object-store publishes carry the domain's API prefix."""

    def _route(self, subject: str) -> str:
        if subject.startswith(("$KV.", "$O.")):
            return f"{self._prefix}.{subject}"
        return subject

    async def publish(self, subject: str, *args: Any, **kwargs: Any) -> Any:
        return await super().publish(self._route(subject), *args, **kwargs)

    async def publish_async(self, subject: str, *args: Any, **kwargs: Any) -> Any:
        return await super().publish_async(self._route(subject), *args, **kwargs)


def jetstream(nc: Client, *, timeout_s: float = 5.0) -> JetStreamContext:
    """Return a JetStream context on ``nc`` that works through a hub as well as at the core."""
    return _DomainJetStream(nc, domain=JETSTREAM_DOMAIN, timeout=timeout_s)


async def ensure_kv(
    js: JetStreamContext,
    bucket: str,
    *,
    history: int = 1,
    replicas: int | None = 1,
    max_value_bytes: int = 1024 * 1024,
    max_bytes: int = 256 * 1024 * 1024,
    placement_wait_s: float = 0.0,
) -> KeyValue:
    """Open the KV ``bucket``, creating it (file storage, bounded size) when it does not exist.

    ``replicas=None`` adopts the replica count of an existing bucket (and creates a missing one
    with 1): for processes outside the core, which do not know how many servers it has. On a
    planet the core creates every planet-state bucket with its replica count before any other
    process starts (``ControlService.start``), so they always find it.

    ``placement_wait_s``: how long to retry a create that JetStream refuses with "no suitable
    peers for placement" (a replicated bucket on a cluster whose servers have not all joined).
    """
    assert 1 <= history <= 64, "JetStream KV history is 1..64"
    assert replicas in (None, 1, 3, 5), "use 1, 3 or 5 replicas"
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=bucket,
            history=history,
            replicas=replicas or 1,
            max_value_size=max_value_bytes,
            max_bytes=max_bytes,
            storage=StorageType.FILE,
        )
        try:
            kv = await _placed(lambda: js.create_key_value(config=config), placement_wait_s)
        except BadRequestError as err:
            try:
                kv = await js.key_value(bucket)  # Another process created it first.
            except BucketNotFoundError:
                raise _setup_error("key-value bucket", bucket, err) from err  # a real refusal
        except JsError as err:
            raise _setup_error("key-value bucket", bucket, err) from err
    except JsError as err:
        raise _setup_error("key-value bucket", bucket, err) from err
    await _check_kv_settings(js, bucket, history=history, replicas=replicas)
    return kv


QUEUE_DUPLICATE_WINDOW_S = 7_200
QUEUE_MAX_AGE_S = 4 * 86_400
QUEUE_STREAM_BYTES_MAX = 256 * 1024 * 1024


async def ensure_queue_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create the queues' stream ``EDGEFN_Q`` when it does not exist (the core does, on a planet,
    with its replica count): file storage, a full stream refuses sends (it never drops a
    message), 4 days' retention, a 2 h duplicate window for ``Nats-Msg-Id``, direct gets."""
    config = StreamConfig(
        name=QUEUE_STREAM,
        subjects=[f"{QUEUE_ALL[:-1]}*.*"],
        storage=StorageType.FILE,
        max_bytes=QUEUE_STREAM_BYTES_MAX,
        max_age=QUEUE_MAX_AGE_S,
        discard=DiscardPolicy.NEW,
        duplicate_window=QUEUE_DUPLICATE_WINDOW_S,
        allow_direct=True,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.stream_info(QUEUE_STREAM)  # it exists already (or this raises the real refusal)


async def direct_get_batch(
    nc: Client, stream: str, subject: str, from_seq: int, limit: int, *, timeout_s: float
) -> list[tuple[int, bytes]]:
    """Up to ``limit`` messages ``(sequence, data)`` of ``subject`` in ``stream`` from sequence
    ``from_seq`` on, in one batched direct get (the stream must allow direct gets). Raises what
    the client raises (a timeout when the stream does not answer)."""
    inbox = nc.new_inbox()
    got: list[tuple[int, bytes]] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Msg) -> None:
        headers = msg.headers or {}
        if headers.get("Status"):  # the end of the batch (204/404), or nothing there
            if not done.done():
                done.set_result(None)
            return
        with contextlib.suppress(ValueError):  # a malformed sequence: not a stream message
            got.append((int(headers.get("Nats-Sequence", "0")), msg.data))
        if len(got) >= limit and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(inbox, cb=on_msg)
    try:
        request = {"seq": max(1, from_seq), "next_by_subj": subject, "batch": limit}
        await nc.publish(
            f"$JS.{JETSTREAM_DOMAIN}.API.DIRECT.GET.{stream}",
            json.dumps(request).encode(),
            reply=inbox,
        )
        await asyncio.wait_for(done, timeout_s)
    finally:
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await sub.unsubscribe()
    return sorted(got)


async def ensure_atomic_batches(js: JetStreamContext, stream: str) -> None:
    """Let ``stream`` take atomic batch publishes (nats-server 2.12+; queue commits need them)."""
    info = await js.stream_info(stream)
    if not info.config.allow_atomic:
        config = info.config
        config.allow_atomic = True
        await js.update_stream(config)


async def _check_kv_settings(
    js: JetStreamContext, bucket: str, *, history: int, replicas: int | None
) -> None:
    info = await js.stream_info(f"KV_{bucket}")
    have_history = info.config.max_msgs_per_subject
    have_replicas = info.config.num_replicas
    if replicas is None:
        replicas = have_replicas
    if have_history != history or have_replicas != replicas:
        raise BusSetupError(
            f"key-value bucket {bucket!r} exists with history={have_history}, "
            f"replicas={have_replicas}; this process wants history={history}, replicas={replicas}",
            hint=f"make every process agree, or delete the bucket (nats kv del {bucket}) first",
        )


async def ensure_object_store(
    js: JetStreamContext,
    bucket: str,
    *,
    replicas: int = 1,
    max_bytes: int = 1024 * 1024 * 1024,
    placement_wait_s: float = 0.0,
) -> ObjectStore:
    """Open the object store ``bucket``, creating it (file storage, bounded size) if missing.

    ``placement_wait_s`` as for :func:`ensure_kv`.
    """
    assert replicas in (1, 3, 5), "use 1, 3 or 5 replicas"
    try:
        return await js.object_store(bucket)
    except (BucketNotFoundError, NotFoundError):
        pass
    except JsError as err:
        raise _setup_error("object store", bucket, err) from err
    config = ObjectStoreConfig(
        bucket=bucket, replicas=replicas, max_bytes=max_bytes, storage=StorageType.FILE
    )
    try:
        return await _placed(
            lambda: js.create_object_store(bucket, config=config), placement_wait_s
        )
    except BadRequestError as err:
        try:
            return await js.object_store(bucket)  # Another process created it first.
        except (BucketNotFoundError, NotFoundError):
            raise _setup_error("object store", bucket, err) from err  # a real refusal
    except JsError as err:
        raise _setup_error("object store", bucket, err) from err


_NO_PLACEMENT = 10005  # JetStream's err_code for "no suitable peers for placement"
_PLACEMENT_RETRY_S = 0.25
_T = TypeVar("_T")


async def _placed(create: Callable[[], Awaitable[_T]], wait_s: float) -> _T:
    """Run ``create``, retrying a refused placement until ``wait_s`` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            return await create()
        except BadRequestError as err:
            if err.err_code != _NO_PLACEMENT or loop.time() + _PLACEMENT_RETRY_S > deadline:
                raise
        await asyncio.sleep(_PLACEMENT_RETRY_S)


async def wait_jetstream(nc: Client, *, timeout_s: float, poll_s: float = 0.25) -> None:
    """Return once the core's JetStream API answers; :class:`BusSetupError` after ``timeout_s``.

    A clustered core answers no JetStream request (or answers 503) until its servers have
    elected a meta leader, which takes seconds after a start or the loss of the leader; a
    single server answers at once. Each probe (``$JS.API.INFO``) is bounded by ``poll_s`` plus
    its own short timeout, so the wait never exceeds ``timeout_s`` by more than one probe.
    """
    assert timeout_s > 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    js = jetstream(nc, timeout_s=min(2.0, timeout_s))
    last: Exception | None = None
    while loop.time() < deadline:
        try:
            await js.account_info()
            return
        except (TimeoutError, NatsError) as err:  # JetStream errors are NatsErrors too
            last = err
        await asyncio.sleep(poll_s)
    raise BusSetupError(
        f"the core's JetStream did not answer within {timeout_s:g}s (last error: {last!r})",
        hint="a clustered core needs a majority of its servers running and routed to each "
        "other (see their logs); a single core needs JetStream enabled",
    )


def _setup_error(kind: str, bucket: str, err: Exception) -> BusSetupError:
    return BusSetupError(
        f"could not open or create the {kind} {bucket!r}: {err!r}",
        hint="check that the core runs JetStream and is reachable (a hub forwards to its core); "
        "with replicas > 1 the core must be a 3-server cluster",
    )
