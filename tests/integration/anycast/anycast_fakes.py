"""A fake edge location: a tiny starlette app with the health, echo and download routes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class FakeLocation:
    """A location's HTTP surface: health (switchable), an echo, a streamed download."""

    name: str
    healthy: bool = True
    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def health(_request: Request) -> Response:
            return Response(status_code=200 if self.healthy else 503)

        async def echo(request: Request) -> JSONResponse:
            digest = hashlib.sha256()
            size = 0
            async for chunk in request.stream():
                digest.update(chunk)
                size += len(chunk)
            row = {
                "location": self.name,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": dict(request.headers),
                "size": size,
                "sha256": digest.hexdigest(),
            }
            self.seen.append(row)
            return JSONResponse(row, headers={"x-edgefn-location": self.name})

        async def download(request: Request) -> StreamingResponse:
            count = int(request.query_params.get("chunks", "10"))

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(count):
                    yield i.to_bytes(4, "big") * 4096

            return StreamingResponse(chunks(), media_type="application/octet-stream")

        return Starlette(
            routes=[
                Route("/_edgefn/health", health),
                Route("/download", download),
                Route("/{path:path}", echo, methods=["GET", "POST", "PUT"]),
            ]
        )


StartLocation = Callable[[str], Coroutine[Any, Any, FakeLocation]]
