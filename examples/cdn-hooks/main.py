"""CloudFront's four hooks around the edge cache (docs/design/0026-edge-cache.md).

- viewer_request: answers /healthz itself, refuses /admin/*, and drops the query string of
  /static/* so every variant of a static URL shares one cache entry;
- origin_request (only on this location's misses): tells the origin who is asking;
- origin_response: gives /static/* responses an hour of freshness when the origin sent none;
- viewer_response (every response, hits too): names the location that answered.
"""

from edgefn import Request, Response


async def viewer_request(request, env, ctx):
    if request.path == "/healthz":
        return Response.json({"ok": True, "location": request.edge.location})
    if request.path.startswith("/admin/"):
        return Response.json({"error": "forbidden"}, status=403)
    if request.path.startswith("/static/") and "?" in request.url:
        return Request(
            request.url.partition("?")[0], headers=request.headers.items(), edge=request.edge
        )
    return None


async def origin_request(request, env, ctx):
    request.headers.set("x-origin-key", env.ORIGIN_KEY)
    return request


async def origin_response(request, response, env, ctx):
    if request.path.startswith("/static/") and "cache-control" not in response.headers:
        response.headers.set("cache-control", "public, max-age=3600")
    return response


async def viewer_response(request, response, env, ctx):
    response.headers.set("x-served-by", request.edge.location)
    return None
