"""Unit-test a function in-process, without a server: ``edgefn.testing.TestClient``.

    from edgefn.testing import TestClient

    def test_hello():
        client = TestClient("path/to/function")       # reads edgefn.toml, imports main
        resp = client.request("/hello?name=Ada")
        assert resp.status == 200
        assert resp.text_body == "Hello, Ada!"

The function runs in the test's own process with the same ``Request``/``Env``/``Context`` objects the
sandbox uses. ``edgefn.fetch`` follows the manifest's ``[limits] subrequests`` and ``[egress]``
rules through the node's own ``Outbound`` (same SSRF policy: loopback and private addresses need
``[egress] allow_private``), and KV bindings are real in-memory namespaces with revisions, so ``if_revision`` conflicts
behave as on the platform (eventual semantics only: there is one replica).

Secrets: ``TestClient(path, secrets={"API_KEY": "test-key"})`` gives the function ``env.API_KEY``,
with the platform's rules (valid names, at most 5 KiB, no name shared with ``[vars]`` or a KV
binding). Never commit real secret values in tests.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefn.bundle import Manifest, load_manifest
from edgefn.bundle.manifest import Egress
from edgefn.edge._egress_policy import EgressRules, precheck
from edgefn.edge.outbound import Outbound, SubrequestRules
from edgefn.errors import (
    EgressDeniedError,
    FetchError,
    KVConflict,
    KVLimitError,
    ManifestError,
    SubrequestLimitError,
    UsageError,
)
from edgefn.runtime import protocol as p
from edgefn.runtime.worker import FETCH_ERRORS
from edgefn.sdk import Context, EdgeInfo, Env, KVEntry, Request, Response
from edgefn.sdk._fetch import FetchBackend, Subrequest, fetch_backend
from edgefn.sdk._headers import HeadersInit
from edgefn.secrets.names import validate_secret_name, validate_secret_value

__all__ = ["MemoryKV", "TestClient", "TestResponse"]

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TestResponse:
    """A finished response: status, headers and the whole body."""

    __test__ = False  # not a pytest test class

    status: int
    headers: dict[str, str]
    body: bytes
    chunks: list[bytes] = field(default_factory=list)

    @property
    def text_body(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class _Entry:
    value: bytes
    revision: int
    metadata: Any
    expires_at: float | None


class MemoryKV:
    """A single-replica KV namespace with revisions, for tests of function code."""

    def __init__(self) -> None:
        self._data: dict[str, _Entry] = {}
        self._revision = 0

    def _live(self, key: str) -> _Entry | None:
        e = self._data.get(key)
        if e is not None and e.expires_at is not None and e.expires_at <= time.monotonic():
            del self._data[key]
            return None
        return e

    @staticmethod
    def _check_key(key: str) -> None:
        if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
            raise KVLimitError(f"keys must be non-empty strings of at most {MAX_KEY_BYTES} bytes")

    async def get(self, key: str, *, consistency: str = "eventual", type: str = "text") -> Any:
        self._check_key(key)
        e = self._live(key)
        if e is None:
            return None
        if type == "bytes":
            return e.value
        text = e.value.decode()
        return json.loads(text) if type == "json" else text

    async def get_entry(self, key: str, *, consistency: str = "eventual") -> KVEntry:
        self._check_key(key)
        e = self._live(key)
        if e is None:
            return KVEntry(None, 0, None)
        return KVEntry(e.value.decode(), e.revision, e.metadata)

    async def put(
        self,
        key: str,
        value: Any,
        *,
        ttl_s: float | None = None,
        metadata: Any = None,
        if_revision: int | None = None,
        consistency: str = "eventual",
    ) -> int:
        self._check_key(key)
        data = (
            value
            if isinstance(value, bytes)
            else (value.encode() if isinstance(value, str) else json.dumps(value).encode())
        )
        if len(data) > MAX_VALUE_BYTES:
            raise KVLimitError(f"value of {len(data)} bytes exceeds {MAX_VALUE_BYTES} bytes")
        current = self._live(key)
        if if_revision is not None and (current.revision if current else 0) != if_revision:
            raise KVConflict(
                f"{key!r} is at revision {current.revision if current else 0}, not {if_revision}",
                key=key,
            )
        self._revision += 1
        expires = time.monotonic() + ttl_s if ttl_s else None
        self._data[key] = _Entry(data, self._revision, metadata, expires)
        return self._revision

    async def delete(
        self, key: str, *, if_revision: int | None = None, consistency: str = "eventual"
    ) -> None:
        current = self._live(key)
        if if_revision is not None and (current.revision if current else 0) != if_revision:
            raise KVConflict(
                f"{key!r} changed (revision {current.revision if current else 0})", key=key
            )
        self._data.pop(key, None)

    async def list(
        self, prefix: str = "", limit: int = 1000, cursor: str | None = None
    ) -> dict[str, Any]:
        keys = sorted(k for k in list(self._data) if k.startswith(prefix) and self._live(k))
        if cursor:
            keys = [k for k in keys if k > cursor]
        page = keys[:limit]
        more = len(keys) > limit
        return {"keys": page, "cursor": page[-1] if more and page else None}


def _checked_secrets(secrets: Mapping[str, str], taken: set[str]) -> dict[str, str]:
    """``secrets`` if the platform would accept them for this manifest (else ``UsageError``)."""
    for name, value in secrets.items():
        validate_secret_name(name)
        validate_secret_value(value)
        if name in taken:
            raise UsageError(
                f"secret {name!r} has the name of a [vars] entry or KV binding",
                hint="the platform refuses this too: rename one of them",
            )
    return dict(secrets)


class TestClient:
    """Runs ``fetch(request, env, ctx)`` of the function in ``path`` in this process."""

    __test__ = False

    def __init__(
        self,
        path: str | Path = ".",
        *,
        vars: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        location: str = "test",
        fetch: FetchBackend | None = None,
    ) -> None:
        self.path = Path(path)
        self.manifest: Manifest = load_manifest(self.path)
        self._fn = _import(self.path, self.manifest)
        values: dict[str, Any] = dict(self.manifest.vars)
        values.update(vars or {})
        self.kv = {ns.binding: MemoryKV() for ns in self.manifest.kv_namespaces}
        values.update(_checked_secrets(secrets or {}, set(self.manifest.vars) | set(self.kv)))
        values.update(self.kv)
        self.env = Env(values)
        self.location = location
        self._backend = fetch
        self._counter = 0

    async def fetch(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        headers: HeadersInit = None,
        body: bytes | str = b"",
        client_location: str = "",
    ) -> TestResponse:
        """Call the function; returns the whole response (streamed bodies are collected)."""
        self._counter += 1
        rid = f"test-{self._counter}"
        url = path if "://" in path else f"http://{self.manifest.name}.localhost{path}"
        data = body.encode() if isinstance(body, str) else body
        req = Request(
            url,
            method=method,
            headers=headers,
            body=data,
            edge=EdgeInfo(self.location, client_location, rid),
        )
        token = fetch_backend.set(self._rules_backend())
        outbound = Outbound()
        out_token = _OUTBOUND.set((outbound, [0]))
        ctx = Context()
        try:
            resp = await self._fn(req, self.env, ctx)
            if not isinstance(resp, Response):
                raise TypeError(f"fetch returned {type(resp).__name__}, not edgefn.Response")
            chunks = [c async for c in resp.iter_body()]
            await ctx.drain(timeout_s=30)
        finally:
            fetch_backend.reset(token)
            _OUTBOUND.reset(out_token)
            await outbound.aclose()
        return TestResponse(resp.status, dict(resp.headers.items()), b"".join(chunks), chunks)

    def request(self, path: str = "/", **kwargs: Any) -> TestResponse:
        """Synchronous :meth:`fetch` (for plain pytest without an async plugin)."""
        return asyncio.run(self.fetch(path, **kwargs))

    def _rules_backend(self) -> FetchBackend:
        """The platform's subrequest rules, from the same code the node runs.

        Without a ``fetch=`` fake, subrequests go through a real ``Outbound`` (limits, the SSRF
        policy, DNS pinning, redirects). With a fake, the same policy runs every check that needs
        no DNS (``precheck``) before the fake is called, and the subrequest limit applies.
        """
        limits, egress = self.manifest.limits, self.manifest.egress
        rules = EgressRules(egress.allow, egress.allow_private)
        used = 0
        inner = self._backend

        async def backend(sub: Subrequest) -> Response:
            nonlocal used
            if inner is None:
                return await _outbound_backend(sub, limits.subrequests, egress)
            used += 1
            if used > limits.subrequests:
                raise SubrequestLimitError(f"more than {limits.subrequests} subrequests")
            refusal = precheck(rules, sub.url)
            if refusal is not None:
                raise EgressDeniedError(refusal.message)
            return await inner(sub)

        return backend


_OUTBOUND: ContextVar[tuple[Outbound, list[int]] | None] = ContextVar(
    "edgefn_testing_outbound", default=None
)


async def _outbound_backend(sub: Subrequest, subrequests: int, egress: Egress) -> Response:
    state = _OUTBOUND.get()
    assert state is not None, "TestClient.fetch sets up the Outbound"
    outbound, counter = state
    counter[0] += 1
    call = p.FetchCall(
        counter[0], counter[0], sub.url, sub.method, sub.headers, sub.body, sub.timeout_ms
    )
    rules = SubrequestRules(subrequests, egress.allow, egress.allow_private)
    res = await outbound.fetch("test", call, rules)
    if res.error_kind:
        raise FETCH_ERRORS.get(res.error_kind, FetchError)(res.error_message)
    return Response(res.body, status=res.status, headers=res.headers)


def _import(path: Path, manifest: Manifest) -> Callable[..., Any]:
    main = path / manifest.main
    name = f"edgefn_test_{manifest.name.replace('-', '_')}_{os.getpid()}"
    spec = importlib.util.spec_from_file_location(name, main)
    if spec is None or spec.loader is None:
        raise ManifestError(f"cannot import {main}", path=str(main))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path))
    fn = getattr(module, "fetch", None)
    if fn is None or not inspect.iscoroutinefunction(fn):
        raise ManifestError(
            "defines no `async def fetch(request, env, ctx)`",
            path=str(main),
            hint="add an async fetch handler",
        )
    return fn  # type: ignore[no-any-return]
