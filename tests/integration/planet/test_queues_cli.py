"""``edgefn queues list|send|peek|dlq [--replay]`` on a real planet, and who may use them (#14).

One location runs a consumer of ``cli-jobs`` whose dead-letter queue ``cli-dead`` has no consumer:
a message with ``"fail": true`` is retried until the function is "fixed" (a strong KV flag set by
``POST /fix``), so it lands in the DLQ, shows there, and a replay after the fix processes it.
Another account's token sees none of these queues and may neither read, send nor replay them,
and its manifests may not name them (tests/unit/control/test_auth.py has the registry rules).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn.bundle import load_or_create_signing_key
from tests.planet_helpers import Planet, PlanetFactory, PlanetSpec, cli_env
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

NAME = "qcli"
TOML = f"""
name = "{NAME}"
main = "main.py"

[[kv_namespaces]]
binding = "KV"
namespace = "qcli-state"

[[queues.producers]]
binding = "JOBS"
queue = "cli-jobs"

[[queues.consumers]]
queue = "cli-jobs"
max_batch_size = 8
max_batch_timeout_ms = 20
max_retries = 1
retry_delay_s = 0.1
dead_letter_queue = "cli-dead"
"""
MAIN = """
from edgefn import Response


async def fetch(request, env, ctx):
    if request.method == "POST" and request.path == "/fix":
        await env.KV.put("fixed", "1", consistency="strong")
        return Response("fixed")
    if request.path == "/done":
        seen = await env.KV.get("done:" + request.query["id"], consistency="strong", type="json")
        return Response.json({"body": seen["body"] if seen else None})
    return Response("?", status=404)


async def queue(batch, env, ctx):
    fixed = await env.KV.get("fixed", consistency="strong")
    for message in batch.messages:
        failing = isinstance(message.body, dict) and message.body.get("fail")
        if failing and fixed is None:
            message.retry()
            continue
        await env.KV.put("done:" + message.id, {"body": message.body}, consistency="strong")
"""


def _write(root: Path, toml: str = TOML) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "edgefn.toml").write_text(toml)
    (root / "main.py").write_text(MAIN)
    return root


@pytest.fixture(scope="module")
def planet(planet_factory: PlanetFactory, tmp_path_factory: pytest.TempPathFactory) -> Planet:
    p = planet_factory("queues-cli", PlanetSpec(locations=1))
    p.deploy(_write(tmp_path_factory.mktemp("fn") / NAME))
    return p


def _done(planet: Planet, message_id: str) -> Any:
    resp = httpx.get(
        f"{planet.entry_url}/done",
        params={"id": message_id},
        headers={"host": f"{NAME}.localhost"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["body"]


def _refused(res: Any, text: str) -> None:
    assert res.returncode != 0
    assert text in res.stderr, res.stderr


def _queue(planet: Planet, name: str) -> dict[str, Any]:
    rows = planet.edgefn("queues", "list", "--json")["queues"]
    return next(q for q in rows if q["queue"] == name)


def test_send_peek_list_dead_letters_and_replay(planet: Planet) -> None:
    listed = _queue(planet, "cli-jobs")
    assert (listed["producers"], listed["consumers"]) == ([NAME], [NAME])
    assert listed["dead_letter_queue"] == "cli-dead"
    # A delayed message waits: peek shows it (and changes nothing), list counts it.
    later = planet.edgefn(
        "queues", "send", "cli-jobs", '{"n": 1}', "--key", "a", "--delay-s", "600", "--json"
    )["ids"][0]
    peeked = planet.edgefn("queues", "peek", "cli-jobs", "--json")["messages"]
    assert [(m["id"], m["key"], m["body"]) for m in peeked] == [(later, "a", {"n": 1})]
    assert peeked[0]["not_before_ms"] > peeked[0]["sent_ms"] + 500_000
    assert _queue(planet, "cli-jobs")["backlog"] == 1
    # A message sent from the CLI is processed like a function's.
    now = planet.edgefn("queues", "send", "cli-jobs", '{"n": 2}', "--json")["ids"][0]
    wait_for(lambda: _done(planet, now) == {"n": 2}, timeout_s=30, what="the sent message")
    # The same idempotency key twice: one message, one id.
    twice = [
        planet.edgefn(
            "queues", "send", "cli-jobs", "plain text", "--idempotency-key", "k1", "--json"
        )["ids"][0]
        for _ in range(2)
    ]
    assert twice[0] == twice[1]
    wait_for(lambda: _done(planet, twice[0]) == "plain text", timeout_s=30, what="idempotent")
    # A failing message ends in the DLQ after max_retries, and shows there.
    bad = planet.edgefn("queues", "send", "cli-jobs", '{"fail": true}', "--json")["ids"][0]

    def dead() -> list[dict[str, Any]]:
        out = planet.edgefn("queues", "dlq", "cli-jobs", "--json")
        assert out["dead_letter_queue"] == "cli-dead"
        messages: list[dict[str, Any]] = out["messages"]
        return messages

    wait_for(lambda: [m["id"] for m in dead()] == [bad], timeout_s=30, what="the dead letter")
    assert _queue(planet, "cli-jobs")["dead"] == 1
    assert _done(planet, bad) is None
    # Fixed, the replay moves it back to the queue, where it is processed; the DLQ is empty.
    fixed = httpx.post(f"{planet.entry_url}/fix", headers={"host": f"{NAME}.localhost"})
    assert fixed.status_code == 200, fixed.text
    replayed = planet.edgefn("queues", "dlq", "cli-jobs", "--replay", "--json")
    assert replayed["replayed"] == [bad]
    wait_for(lambda: _done(planet, bad) == {"fail": True}, timeout_s=30, what="the replay")
    assert dead() == []
    again = planet.edgefn("queues", "dlq", "cli-jobs", "--replay", "--json")
    assert again["replayed"] == []
    # The tables print too.
    table = planet.edgefn("queues", "list", env=cli_env(planet.state, COLUMNS="160"))
    assert "cli-jobs" in table.stdout
    assert "cli-dead" in table.stdout
    # The delayed message is still waiting, untouched by all of this.
    assert [m["id"] for m in planet.edgefn("queues", "peek", "cli-jobs", "--json")["messages"]] == [
        later
    ]


def test_bad_arguments_are_clear_errors(planet: Planet) -> None:
    res = planet.edgefn("queues", "peek", "no-such-queue", check=False)
    _refused(res, "no queue 'no-such-queue'")
    res = planet.edgefn("queues", "send", "cli-jobs", "{}", "--delay-s", "-1", check=False)
    _refused(res, "delay_s is a number of seconds")
    res = planet.edgefn("queues", "send", "cli-jobs", "{}", "--key", "", check=False)
    _refused(res, "a message key is a string")
    res = planet.edgefn("queues", "peek", "cli-jobs", "--limit", "0", check=False)
    assert res.returncode == 2
    assert "--limit" in res.stderr


def test_another_account_cannot_see_use_or_name_the_queues(planet: Planet, tmp_path: Path) -> None:
    made = planet.edgefn(
        "token", "create", "--name", "other", "--scope", "deploy:*", "--account", "other", "--json"
    )
    key = load_or_create_signing_key(tmp_path / "other.pem")
    (tmp_path / "other.pub").write_text(key.public_key_pem())
    planet.edgefn("key", "add", str(tmp_path / "other.pub"), "--account", "other", "--json")
    env = cli_env(
        planet.state, EDGEFN_TOKEN=made["token"], EDGEFN_DEPLOYER_KEY=str(tmp_path / "other.pem")
    )
    assert planet.edgefn("queues", "list", "--json", env=env)["queues"] == []
    for args in (
        ("queues", "peek", "cli-jobs"),
        ("queues", "send", "cli-jobs", "{}"),
        ("queues", "dlq", "cli-jobs"),
        ("queues", "dlq", "cli-jobs", "--replay"),
    ):
        res = planet.edgefn(*args, env=env, check=False)
        assert res.returncode != 0, args
        assert "queue 'cli-jobs' belongs to account 'default'" in res.stderr, (args, res.stderr)
    # Its own function naming the queue (here: as its dead-letter queue) is refused at upload.
    theirs = TOML.replace(f'name = "{NAME}"', 'name = "thief"').replace(
        'namespace = "qcli-state"', 'namespace = "thief-state"'
    )
    root = _write(tmp_path / "thief", theirs)
    res = planet.edgefn("deploy", str(root), env=env, check=False)
    assert res.returncode != 0
    assert "queue 'cli-dead' belongs to account 'default'" in res.stderr, res.stderr
    shutil.rmtree(root)
    # A read-only token of the owning account reads but does not send.
    reader = planet.edgefn("token", "create", "--name", "r", "--scope", "read", "--json")
    renv = cli_env(planet.state, EDGEFN_TOKEN=reader["token"])
    assert planet.edgefn("queues", "peek", "cli-jobs", "--json", env=renv)["queue"] == "cli-jobs"
    res = planet.edgefn("queues", "send", "cli-jobs", "{}", env=renv, check=False)
    _refused(res, "deploy:*")
