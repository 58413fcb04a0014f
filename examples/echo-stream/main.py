"""Streams the request body back in chunks, with a line per chunk as it is produced."""

import asyncio

from edgefn import Response


async def fetch(request, env, ctx):
    body = await request.body() or b"edge functions stream their responses"
    words = body.split()

    async def chunks():
        for i, word in enumerate(words):
            yield f"{i}: {word.decode(errors='replace')}\n".encode()
            await asyncio.sleep(0.05)

    return Response(chunks(), headers={"content-type": "text/plain; charset=utf-8"})
