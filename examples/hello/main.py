"""Greets the caller and says where on the planet it was served."""

from edgefn import Response


async def fetch(request, env, ctx):
    name = request.query.get("name", "world")
    return Response.json(
        {
            "message": f"{env.GREETING}, {name}!",
            "served_by": request.edge.location,
            "client_location": request.edge.client_location,
        }
    )
