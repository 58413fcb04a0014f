import asyncio

from edgefn import Response


async def fetch(request, env, ctx):
    path = request.path
    if path == "/raise":
        raise ValueError("secret detail that must not reach the client")
    if path == "/loop":
        while True:
            pass
    if path == "/sleep":
        await asyncio.sleep(60)
    if path == "/memory":
        hog = bytearray(512 * 1024 * 1024)
        return Response(bytes(hog[:1]))
    if path == "/bad":
        return {"not": "a response"}
    if path == "/echo":
        return Response(await request.body())
    return Response.json({"ok": True, "greeting": env.GREETING, "query": dict(request.query)})
