"""Request and response bodies in every shape: streamed through, echoed whole, large downloads."""

import asyncio
import hashlib

from edgefn import Response


async def fetch(request, env, ctx):
    mode = request.query.get("mode", "")
    if mode == "sha":
        # Piece by piece: the function holds one chunk at a time, however large the body.
        h, total, biggest = hashlib.sha256(), 0, 0
        hold = float(request.query.get("hold", "0"))
        async for chunk in request.iter_body():
            if hold:
                await asyncio.sleep(hold)  # stop reading for a while once: backpressure
                hold = 0
            h.update(chunk)
            total += len(chunk)
            biggest = max(biggest, len(chunk))
        return Response.json({"bytes": total, "sha256": h.hexdigest(), "biggest_chunk": biggest})
    if mode == "echo":
        return Response(await request.body())
    if mode == "json":
        return Response.json(await request.json())
    if mode == "download":
        block = bytes(range(256)) * 4096  # 1 MiB
        mib = int(request.query["mib"])

        async def blocks():
            for _ in range(mib):
                yield block

        return Response(blocks(), headers={"content-type": "application/octet-stream"})
    return Response.text("ok")
