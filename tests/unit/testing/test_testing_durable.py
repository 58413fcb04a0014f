"""Durable objects in-process through ``edgefn.testing`` (examples/durable-counter): the node's
record rules and storage ops, one request at a time per object, alarms rung on demand."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgefn.errors import KVError, KVLimitError, ManifestError
from edgefn.testing import TestClient

REPO = Path(__file__).resolve().parents[3]
COUNTER = REPO / "examples/durable-counter"


def test_one_object_per_name_counts_each_op_once() -> None:
    client = TestClient(COUNTER, location="here")

    async def main() -> list[int]:
        async def inc(i: int) -> int:
            r = await client.fetch(f"/increment?name=a&op=o{i}", method="POST")
            assert r.status == 200, r.text_body
            return int(r.json()["n"])

        return await asyncio.gather(*(inc(i) for i in range(20)))

    assert sorted(asyncio.run(main())) == list(range(1, 21))
    again = client.request("/increment?name=a&op=o7", method="POST").json()
    assert again == {"n": 20, "applied": False, "home": "here"}
    assert client.request("/value?name=b").json() == {"n": 0, "rang": 0, "home": "here"}
    assert client.durable_storage("COUNTER", "a")["n"] == 20
    assert client.durable_storage("COUNTER", "b") == {}


def test_alarms_ring_on_demand_and_clear() -> None:
    client = TestClient(COUNTER)
    assert not asyncio.run(client.durable_alarm("COUNTER", "a"))
    client.request("/remind?name=a&in_ms=60000", method="POST")
    assert asyncio.run(client.durable_alarm("COUNTER", "a"))
    assert not asyncio.run(client.durable_alarm("COUNTER", "a"))
    assert client.request("/value?name=a").json()["rang"] == 1


def _function(tmp_path: Path, code: str, toml: str = "") -> Path:
    (tmp_path / "edgefn.toml").write_text(
        'name = "d"\n[[durable_objects]]\nbinding = "OBJ"\nclass_name = "Obj"\n' + toml
    )
    (tmp_path / "main.py").write_text(code)
    return tmp_path


FRONT = """
async def fetch(request, env, ctx):
    return await env.OBJ.get(env.OBJ.id_from_name("x")).fetch(request)
"""


def test_storage_errors_reach_the_object_as_the_platforms(tmp_path: Path) -> None:
    code = (
        """
import contextlib

from edgefn import DurableObject, Response

class Obj(DurableObject):
    async def fetch(self, request):
        if request.path == "/big":
            await self.storage.put("k", "x" * 600_000)
        elif request.path == "/badkey":
            await self.storage.put("", 1)
        elif request.path == "/rollback":
            with contextlib.suppress(ValueError):  # the block raises: nothing is stored
                async with self.storage.transaction() as txn:
                    await txn.put("a", 1)
                    raise ValueError("no")
        got = await self.storage.list()
        return Response.json(got)
"""
        + FRONT
    )
    client = TestClient(_function(tmp_path, code))
    with pytest.raises(KVLimitError, match="over 524288"):
        client.request("/big")
    with pytest.raises(KVError, match="non-empty str"):
        client.request("/badkey")
    assert client.request("/rollback").json() == {}


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("class Obj:\n    pass\n", "defines no `class Obj\\(edgefn.DurableObject\\)`"),
        (
            "from edgefn import DurableObject\nclass Obj(DurableObject):\n    pass\n",
            "must define `async def fetch",
        ),
        (
            "from edgefn import DurableObject\nclass Obj(DurableObject):\n"
            "    async def fetch(self, r):\n        pass\n    def alarm(self):\n        pass\n",
            "alarm` must be declared",
        ),
    ],
)
def test_bad_classes_are_refused_at_load(tmp_path: Path, code: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        TestClient(_function(tmp_path, code + FRONT))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[durable_objects]]\nbinding = "OBJ"\nclass_name = "Other"\n', "duplicate binding"),
        ('[vars]\nOBJ = "x"\n', "already a \\[vars\\] name"),
        ('[[durable_objects]]\nbinding = "B"\n', "missing required key"),
        ('[[durable_objects]]\nbinding = "B"\nclass_name = "a-b"\n', "not an identifier"),
    ],
)
def test_bad_manifests_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as err:
        TestClient(_function(tmp_path, FRONT, toml))
    assert "durable_objects[" in str(err.value)
