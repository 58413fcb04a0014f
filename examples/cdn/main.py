"""A CDN in front of one origin: the edge cache answers what the origin lets it keep.

    GET /any/path      the origin's response through the cache tiers (this location, then the
                       region hub); the response's x-edgefn-cache says HIT, REVALIDATED, MISS,
                       STALE or BYPASS; purge by Cache-Tag with `edgefn cache purge cdn --tag TAG`
    GET /healthz       answered by the function itself
    GET /report?n=N    computed here, kept 60 s in this location's cache with the Cache API
                       (caches.default), tagged "reports"

The function may rewrite on the way: here it adds a header naming the location that served.
"""

from edgefn import Response, caches


async def fetch(request, env, ctx):
    if request.path == "/healthz":
        return Response.json({"ok": True, "location": request.edge.location})
    if request.path == "/report":
        cached = await caches.default.match(request)
        if cached is not None:
            return cached
        n = min(int(request.query.get("n", "10")), 10_000)
        resp = Response.json(
            {"n": n, "sum_of_squares": sum(i * i for i in range(n)), "at": request.edge.location},
            headers={"cache-control": "public, max-age=60", "cache-tag": "reports"},
        )
        await caches.default.put(request, resp)
        return resp
    resp = await env.ORIGIN.fetch(request)
    resp.headers.set("x-served-by", request.edge.location)
    return resp
