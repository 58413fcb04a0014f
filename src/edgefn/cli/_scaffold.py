"""Files written by ``edgefn new NAME``."""

from __future__ import annotations

MANIFEST = """\
name = "{name}"
main = "main.py"

[vars]
GREETING = "Hello"

[limits]
cpu_ms = 1000        # CPU time per request
memory_mb = 128
timeout_ms = 30000   # wall clock per request
max_body_kb = 1024
subrequests = 50     # edgefn.fetch() calls per request

# [egress]
# allow = ["api.example.com"]   # hosts edgefn.fetch() may reach; absent = any

# [[kv_namespaces]]
# binding = "COUNTS"
# namespace = "counts"
"""

MAIN = '''\
"""The {name} function: edgefn calls fetch() for every request."""

from edgefn import Response


async def fetch(request, env, ctx):
    name = request.query.get("name", "world")
    print(f"greeting {{name}}")  # goes to the node's log, tagged with the request id
    return Response.json(
        {{
            "message": f"{{env.GREETING}}, {{name}}!",
            "location": request.edge.location,
            "request_id": request.edge.request_id,
        }}
    )
'''

TEST = '''\
"""Run with: pytest {name}/tests"""

from pathlib import Path

from edgefn.testing import TestClient

HERE = Path(__file__).resolve().parent.parent


def test_greets_by_name():
    client = TestClient(HERE)
    resp = client.request("/?name=Ada")
    assert resp.status == 200
    assert resp.json()["message"] == "Hello, Ada!"


def test_greets_the_world_by_default():
    resp = TestClient(HERE).request("/")
    assert resp.json()["message"] == "Hello, world!"
'''

FILES = {"edgefn.toml": MANIFEST, "main.py": MAIN, "tests/test_main.py": TEST}
