import asyncio

from edgefn import Response


async def fetch(request, env, ctx):
    async def chunks():
        for i in range(3):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.3)

    return Response(chunks(), headers={"content-type": "text/plain"})
