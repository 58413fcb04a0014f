"""Queue producer and consumer: each message's effect counted once, per-key order checked.

POST /send   {"messages": [{"body": {...}, "key": "k"}, ...]}  -> 202 {"ids": [...]}
GET  /count?id=ID                                               -> {"count": n, "dead": bool}
GET  /key?key=K                                                 -> {"last": n, "out_of_order": m}

A message body {"n": i} with a key must arrive after {"n": i - 1} of the same key; a body with
"poison": true always asks to be retried, so after max_retries it goes to the dead-letter queue,
whose consumer marks it dead.
"""

from edgefn import Response


async def fetch(request, env, ctx):
    if request.method == "POST" and request.path == "/send":
        data = await request.json()
        ids = await env.JOBS.send_batch(data["messages"])
        return Response.json({"ids": ids}, status=202)
    if request.path == "/count":
        mid = request.query["id"]
        count = await env.COUNTS.get(f"count:{mid}", consistency="strong", type="json")
        dead = await env.COUNTS.get(f"dead:{mid}", consistency="strong")
        return Response.json({"count": count or 0, "dead": dead is not None})
    if request.path == "/key":
        key = request.query["key"]
        last = await env.COUNTS.get(f"last:{key}", consistency="strong", type="json")
        bad = await env.COUNTS.get(f"bad:{key}", consistency="strong", type="json")
        return Response.json({"last": last, "out_of_order": bad or 0})
    return Response("POST /send, GET /count?id=, GET /key?key=\n", status=404)


async def queue(batch, env, ctx):
    for message in batch.messages:
        if batch.queue == "jobs-dlq":
            await env.COUNTS.put(f"dead:{message.id}", "1", consistency="strong")
            continue
        body = message.body
        if body.get("poison"):
            message.retry()
            continue
        # The message's effect: its own counter (committed with the batch's acknowledgement).
        count = await env.COUNTS.get(f"count:{message.id}", consistency="strong", type="json")
        await env.COUNTS.put(f"count:{message.id}", (count or 0) + 1, consistency="strong")
        if message.key is not None and "n" in body:
            last = await env.COUNTS.get(f"last:{message.key}", consistency="strong", type="json")
            if last is not None and body["n"] != last + 1:
                bad = await env.COUNTS.get(f"bad:{message.key}", consistency="strong", type="json")
                await env.COUNTS.put(f"bad:{message.key}", (bad or 0) + 1, consistency="strong")
            await env.COUNTS.put(f"last:{message.key}", body["n"], consistency="strong")
