"""A counter on the replicated KV: strong compare-and-set increments, plus plain reads and writes.

    POST /incr?key=n                      strong CAS loop: read the revision, put if unchanged
                                          (jittered backoff after a conflict)
    GET  /get?key=k&consistency=session   read at any level (eventual, session, causal, strong)
    PUT  /put?key=k&consistency=session   write the request body (&if_revision=N: only if the key
                                          is still at revision N, else 409 with its revision)
    GET  /list?prefix=p                   list keys

Session tokens travel in the x-edgefn-session header; the platform adds the new one to the response.
"""

import asyncio
import random

from edgefn import KVConflict, Response

MAX_ATTEMPTS = 64


async def fetch(request, env, ctx):
    path = request.path.rsplit("/", 1)[-1]
    key = request.query.get("key", "n")
    level = request.query.get("consistency", "eventual")
    if path == "incr":
        return await _increment(env, key)
    if path == "get":
        entry = await env.COUNTS.get_entry(key, consistency=level)
        return Response.json({"key": key, **entry.as_dict(), "served_by": request.edge.location})
    if path == "put" and request.method == "PUT":
        value = await request.text()
        expected = request.query.get("if_revision")
        try:
            revision = await env.COUNTS.put(
                key,
                value,
                consistency=level,
                if_revision=None if expected is None else int(expected),
            )
        except KVConflict as err:
            return Response.json({"error": "conflict", "revision": err.revision}, status=409)
        return Response.json({"key": key, "revision": revision, "served_by": request.edge.location})
    if path == "list":
        return Response.json(await env.COUNTS.list(prefix=request.query.get("prefix", "")))
    return Response.json(
        {"error": "unknown path", "paths": ["incr", "get", "put", "list"]}, status=404
    )


async def _increment(env, key):
    for attempt in range(1, MAX_ATTEMPTS + 1):
        entry = await env.COUNTS.get_entry(key, consistency="strong")
        count = int(entry.value or 0) + 1
        try:
            revision = await env.COUNTS.put(
                key, str(count), if_revision=entry.revision, consistency="strong"
            )
        except KVConflict:
            # Another increment won this round: back off a random, growing while (capped), so
            # that many contenders spread out instead of all retrying at once.
            await asyncio.sleep(random.uniform(0, min(0.25, 0.01 * 2**attempt)))
            continue
        return Response.json({"count": count, "revision": revision, "attempts": attempt})
    return Response.json({"error": "too much contention", "attempts": MAX_ATTEMPTS}, status=409)
