"""A cron trigger that counts its own runs, one strong counter per tick.

    [triggers] crons = ["* * * * *"]     every minute, UTC, exactly once planet-wide

``scheduled`` adds 1 to ``tick:<scheduled_time>`` with a strong compare-and-set, so a tick that
ran twice would read 2. ``GET /runs?since=MS&until=MS`` reads the count of every minute tick in
that range (at most 120 of them): ``{"ticks": {"<ms>": {"count": 1, "attempts": [1]}, ...}}``;
ticks that never ran are absent.
"""

import asyncio
import json
import random

from edgefn import KVConflict, Response

MAX_ATTEMPTS = 32
MINUTE_MS = 60_000
MAX_TICKS = 120


async def scheduled(event, env, ctx):
    key = f"tick:{event.scheduled_time}"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        entry = await env.RUNS.get_entry(key, consistency="strong")
        runs = json.loads(entry.value) if entry.value else {"count": 0, "attempts": []}
        runs["count"] += 1
        runs["attempts"].append(event.attempt)
        try:
            await env.RUNS.put(
                key, json.dumps(runs), if_revision=entry.revision, consistency="strong"
            )
            print(f"tick {event.scheduled_time} ({event.cron}) counted {runs['count']}")
            return
        except KVConflict:
            await asyncio.sleep(random.uniform(0, min(0.25, 0.01 * 2**attempt)))
    raise RuntimeError(f"{key}: too much contention")


async def fetch(request, env, ctx):
    if request.path != "/runs":
        return Response.json({"error": "unknown path", "paths": ["/runs"]}, status=404)
    try:
        since = int(request.query.get("since", "0"))
        until = int(request.query.get("until", "0"))
    except ValueError:
        return Response.json({"error": "since and until are milliseconds"}, status=400)
    first = -(-since // MINUTE_MS) * MINUTE_MS  # the first minute tick at or after `since`
    if until < first or (until - first) // MINUTE_MS >= MAX_TICKS:
        return Response.json(
            {"error": f"give since <= until, at most {MAX_TICKS} minutes"}, status=400
        )
    ticks = {}
    for tick in range(first, until + 1, MINUTE_MS):
        entry = await env.RUNS.get_entry(f"tick:{tick}", consistency="strong")
        if entry.value:
            ticks[str(tick)] = json.loads(entry.value)
    return Response.json({"ticks": ticks, "served_by": request.edge.location})
