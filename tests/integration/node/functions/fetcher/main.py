import edgefn
from edgefn import Response


async def fetch(request, env, ctx):
    target = request.query["url"]
    count = int(request.query.get("n", "1"))
    bodies = []
    try:
        for _ in range(count):
            resp = await edgefn.fetch(target, headers={"x-from": "fetcher"})
            bodies.append(await resp.text())
    except edgefn.FetchError as err:
        return Response.json({"error": type(err).__name__, "message": str(err)}, status=502)
    return Response.json({"status": resp.status, "bodies": bodies})
