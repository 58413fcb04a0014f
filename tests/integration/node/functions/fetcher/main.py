import edgefn
from edgefn import Response


async def fetch(request, env, ctx):
    target = request.query["url"]
    count = int(request.query.get("n", "1"))
    body = b"x" * (int(request.query.get("body_mb", "0")) * 2**20) or None
    bodies = []
    try:
        for _ in range(count):
            method = "POST" if body else "GET"
            resp = await edgefn.fetch(
                target, method=method, headers={"x-from": "fetcher"}, body=body
            )
            bodies.append(await resp.text())
    except edgefn.FetchError as err:
        return Response.json({"error": type(err).__name__, "message": str(err)}, status=502)
    return Response.json({"status": resp.status, "bodies": bodies})
