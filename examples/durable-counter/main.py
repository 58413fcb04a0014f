"""A counter durable object: one instance per name, wherever it is called from.

    POST /increment?name=N&op=ID   add 1 (once per op id: a retried request is not counted twice)
    GET  /value?name=N             the count, and which location is the object's home
    POST /remind?name=N&in_ms=MS   set an alarm; alarm() counts how often it rang
    ?hint=LOCATION                 where to make the object's home if it has none yet

Every storage write returns once it is durable in the replicated strong KV, so a count that was
acknowledged survives the home's death: the next request after its lease ends (~10 s) makes
another location the home, with the same storage (docs/design/0027-durable-objects.md).
"""

import time

from edgefn import DurableObject, Response


class Counter(DurableObject):
    async def fetch(self, request):
        if request.method == "POST" and request.path == "/increment":
            op = request.query.get("op", "")
            applied = True
            async with self.storage.transaction() as txn:
                n = await txn.get("n") or 0
                if op and await txn.get(f"op:{op}"):
                    applied = False  # this op was counted before (the reply was lost)
                else:
                    n += 1
                    await txn.put("n", n)
                    if op:
                        await txn.put(f"op:{op}", True)
            return Response.json({"n": n, "applied": applied, "home": request.edge.location})
        if request.method == "POST" and request.path == "/remind":
            in_ms = min(int(request.query.get("in_ms", "1000")), 3_600_000)
            await self.storage.set_alarm(int(time.time() * 1000) + in_ms)
            return Response.json({"alarm_in_ms": in_ms})
        if request.path == "/value":
            got = await self.storage.get(["n", "rang"])
            return Response.json(
                {"n": got.get("n", 0), "rang": got.get("rang", 0), "home": request.edge.location}
            )
        return Response.json({"error": "unknown path"}, status=404)

    async def alarm(self):
        await self.storage.put("rang", (await self.storage.get("rang") or 0) + 1)


async def fetch(request, env, ctx):
    name = request.query.get("name", "global")
    hint = request.query.get("hint") or None
    stub = env.COUNTER.get(env.COUNTER.id_from_name(name), location_hint=hint)
    return await stub.fetch(request)
