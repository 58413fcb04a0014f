"""A CDN in front of one origin: the edge cache answers what the origin lets it keep.

    GET /any/path      the origin's response, cached by its Cache-Control (x-edgefn-cache says
                       HIT, REVALIDATED, MISS, STALE or BYPASS); purge by its Cache-Tag with
                       `edgefn cache purge cdn --tag TAG`

The function may rewrite on the way: here it answers /healthz itself and adds a header with the
location that served the response.
"""

from edgefn import Response


async def fetch(request, env, ctx):
    if request.path == "/healthz":
        return Response.json({"ok": True, "location": request.edge.location})
    resp = await env.ORIGIN.fetch(request)
    resp.headers.set("x-served-by", request.edge.location)
    return resp
