"""Bundle distribution: each region's hub caches bundles, so a bundle crosses each long-haul link once.

The region process runs a :class:`BundleCache` on its hub. The control plane pushes each new
bundle (up to 900 KiB) on ``BUNDLE_ANNOUNCE`` at upload time, so caches usually hold a bundle
before any deploy asks for it and it crosses each core-to-hub link exactly once. An edge node asks its region for a bundle
by sha256 on ``bundle_request_subject(region)`` (request/reply, in chunks of ``CHUNK_BYTES`` so that
no message exceeds NATS's payload limit). On a miss the cache reads the bundle from the core's
JetStream object store once, checks its sha256 and keeps it on local disk; concurrent misses for
the same bundle share one download. :func:`fetch_bundle` is the node's side; when no cache answers
(a planet without region processes) it reads the object store directly.

Request: JSON ``{"sha256": hex, "offset": n}``. Reply: the bytes ``[offset, offset+CHUNK)`` with
header ``Edgefn-Total`` (the bundle's size), or an empty body with ``Edgefn-Error``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from edgefn.bus.jetstream import jetstream
from edgefn.bus.subjects import BUNDLE_ANNOUNCE, BUNDLES_OBJECT_STORE, bundle_request_subject
from edgefn.errors import BundleError

CHUNK_BYTES = 512 * 1024
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class BundleCacheStatistics:
    hits: int
    misses: int
    pushed: int
    bytes_from_core: int
    bytes_served: int
    cached: int


async def _read_object_store(nc: Client, sha256: str) -> bytes:
    js = jetstream(nc)
    store = await js.object_store(BUNDLES_OBJECT_STORE)
    result = await store.get(sha256)
    data = result.data or b""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BundleError(
            f"bundle {sha256[:12]} from the object store has the wrong sha256",
            hint="re-deploy the function",
        )
    return data


class BundleCache:
    """A region's bundle cache (disk + one download per bundle), answering its nodes."""

    def __init__(self, nc: Client, region: str, cache_dir: Path) -> None:
        self.nc = nc
        self.region = region
        self.cache_dir = cache_dir
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._downloads: dict[str, asyncio.Future[bytes]] = {}
        self._hits = self._misses = self._from_core = self._served = 0
        self._sub: Any = None
        self._announce_sub: Any = None
        self._stats_sub: Any = None
        self._pushed = 0

    async def start(self) -> None:
        self._announce_sub = await self.nc.subscribe(BUNDLE_ANNOUNCE, cb=self._on_announce)
        self._stats_sub = await self.nc.subscribe(
            f"{bundle_request_subject(self.region)}.stats", cb=self._on_stats
        )
        self._sub = await self.nc.subscribe(
            bundle_request_subject(self.region), queue="edgefn-bundle-cache", cb=self._on_request
        )

    async def stop(self) -> None:
        for sub in (self._sub, self._announce_sub, self._stats_sub):
            if sub is not None:
                await sub.unsubscribe()

    async def _on_announce(self, msg: Msg) -> None:
        """Store a bundle the control plane pushed at upload, if its sha256 checks out."""
        sha = (msg.headers or {}).get("Edgefn-Sha256", "")
        if not _SHA_RE.match(sha) or hashlib.sha256(msg.data).hexdigest() != sha:
            return
        path = self.cache_dir / f"{sha}.bundle"
        if not path.exists():
            self._pushed += 1
            self._from_core += len(msg.data)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(msg.data)
            os.replace(tmp, path)

    async def _on_stats(self, msg: Msg) -> None:
        await msg.respond(json.dumps(asdict(self.statistics())).encode())

    def statistics(self) -> BundleCacheStatistics:
        cached = sum(1 for _ in self.cache_dir.glob("*.bundle"))
        return BundleCacheStatistics(
            self._hits, self._misses, self._pushed, self._from_core, self._served, cached
        )

    async def get(self, sha256: str) -> bytes:
        path = self.cache_dir / f"{sha256}.bundle"
        if path.exists():
            self._hits += 1
            return path.read_bytes()
        pending = self._downloads.get(sha256)
        if pending is None:
            self._misses += 1
            pending = asyncio.ensure_future(self._download(sha256, path))
            self._downloads[sha256] = pending
            pending.add_done_callback(lambda _f: self._downloads.pop(sha256, None))
        return await asyncio.shield(pending)

    async def _download(self, sha256: str, path: Path) -> bytes:
        data = await _read_object_store(self.nc, sha256)
        self._from_core += len(data)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return data

    async def _on_request(self, msg: Msg) -> None:
        try:
            req = json.loads(msg.data)
            sha, offset = str(req["sha256"]), int(req.get("offset", 0))
            if not _SHA_RE.match(sha) or offset < 0:
                raise ValueError("bad sha256 or offset")
            data = await self.get(sha)
        except Exception as err:
            error = f"{type(err).__name__}: {err}"[:500]
            await self.nc.publish(msg.reply, b"", headers={"Edgefn-Error": error})
            return
        chunk = data[offset : offset + CHUNK_BYTES]
        self._served += len(chunk)
        await self.nc.publish(msg.reply, chunk, headers={"Edgefn-Total": str(len(data))})


async def region_cache_statistics(nc: Client, region: str) -> dict[str, Any]:
    """Ask a region's bundle cache for its counters (bytes fetched from the core, pushes, hits)."""
    reply = await nc.request(f"{bundle_request_subject(region)}.stats", b"", timeout=5)
    out: dict[str, Any] = json.loads(reply.data)
    return out


class _Transient(BundleError):
    """The region or the core did not answer in time: worth another try."""


# What a region's cache reports when the core's object store did not answer (a JetStream leader
# election, a busy core): transient, unlike a bundle that does not exist or fails its checks.
_TRANSIENT_MARKERS = ("Timeout", "NoStreamResponse", "ServiceUnavailable", "NoResponders")
FETCH_DEADLINE_S = 30.0
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 4.0


async def fetch_bundle(
    nc: Client,
    region: str,
    sha256: str,
    *,
    timeout_s: float = 10.0,
    deadline_s: float = FETCH_DEADLINE_S,
) -> bytes:
    """Fetch a bundle through the region's cache (or the object store when there is none).

    A transient failure (the region or the core's object store did not answer: a leader election,
    a busy core) is retried with backoff for up to ``deadline_s``; anything else fails at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    pause = _RETRY_FIRST_S
    while True:
        try:
            return await _fetch_once(nc, region, sha256, timeout_s=timeout_s)
        except _Transient as err:
            if loop.time() + pause >= deadline:
                raise BundleError(
                    f"{err.message} (retried for {deadline_s:g} s)", hint=err.hint
                ) from None
        await asyncio.sleep(pause)
        pause = min(pause * 2, _RETRY_MAX_S)


async def _fetch_once(nc: Client, region: str, sha256: str, *, timeout_s: float) -> bytes:
    subject = bundle_request_subject(region)
    parts: list[bytes] = []
    offset, total = 0, -1
    while total < 0 or offset < total:
        body = json.dumps({"sha256": sha256, "offset": offset}).encode()
        try:
            reply = await nc.request(subject, body, timeout=timeout_s)
        except NoRespondersError:
            return await _read_object_store(nc, sha256)
        except NatsTimeoutError:
            raise _Transient(
                f"region {region} did not answer for bundle {sha256[:12]} within {timeout_s} s",
                hint="is the region's hub reachable?",
            ) from None
        headers = reply.headers or {}
        if "Edgefn-Error" in headers:
            error = headers["Edgefn-Error"]
            kind = _Transient if any(m in error for m in _TRANSIENT_MARKERS) else BundleError
            raise kind(f"region {region} could not serve bundle {sha256[:12]}: {error}")
        total = int(headers.get("Edgefn-Total", "0"))
        if total > MAX_BUNDLE_BYTES:
            raise BundleError(f"bundle {sha256[:12]} is {total} bytes, over {MAX_BUNDLE_BYTES}")
        if not reply.data and offset < total:
            raise BundleError(f"region {region} returned an empty chunk for {sha256[:12]}")
        parts.append(reply.data)
        offset += len(reply.data)
    data = b"".join(parts)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BundleError(
            f"bundle {sha256[:12]} arrived with the wrong sha256 (tampered or corrupt)",
            hint="the node refuses it; re-deploy the function",
        )
    return data
