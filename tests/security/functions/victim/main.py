from edgefn import Response

KEEP = []


async def fetch(request, env, ctx):
    # Keep the secret in this worker's heap so that reading the worker's memory would find it.
    KEEP.append(("victim-secret", env.SECRET))
    return Response("victim ok")
