"""``GET /v1/tail/{name}`` on a real core over real HTTP: a node's event reaches the client, the
session is announced while the client reads and ended when it leaves; bad queries are 400/404."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from _control_fixtures import Control, bundle_dir, eventually, upload
from nats.aio.client import Client

from edgefn.bundle import SigningKey
from edgefn.bus.subjects import TAIL_SESSIONS, tail_event_subject
from edgefn.observe.tail import TailAnnounce, TailEvent

pytestmark = pytest.mark.integration

FN = "hello"


async def test_tail_streams_events_and_ends_the_session_when_the_client_leaves(
    control: Control, nc: Client, signing_key: SigningKey, tmp_path: Path
) -> None:
    assert (await upload(control, control.token, signing_key, bundle_dir(tmp_path, FN))).is_success
    announced: list[TailAnnounce] = []

    async def on_announce(msg: Any) -> None:
        announced.append(msgspec.json.decode(msg.data, type=TailAnnounce))

    await nc.subscribe(TAIL_SESSIONS, cb=on_announce)
    headers = {"authorization": f"Bearer {control.token}"}
    async with (
        httpx.AsyncClient(base_url=control.url, timeout=10) as http,
        http.stream("GET", f"/v1/tail/{FN}?status=5xx", headers=headers) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        lines = resp.aiter_lines()
        head = json.loads(await anext(lines))
        session = head["session"]
        await eventually(_async_check(lambda: bool(announced)))
        assert (announced[0].session, announced[0].status_class) == (session, 5)
        event = TailEvent(
            session=session, request_id="r1", ts_ms=1, location="fra", function=FN,
            version="v1", method="GET", path="/", status=503, duration_ms=1.0, cold=False,
            client="", sample=1.0,
        )  # fmt: skip
        await nc.publish(tail_event_subject("fra", session), msgspec.json.encode(event))
        got = json.loads(await anext(lines))
        assert (got["type"], got["request_id"], got["location"]) == ("request", "r1", "fra")
    # The client left: the core tells the nodes at once (ttl 0).
    await eventually(_async_check(lambda: any(a.ttl_ms == 0 for a in announced)))
    assert all(a.session == session for a in announced)


def _async_check(check: Any) -> Any:
    async def run() -> bool:
        return bool(check())

    return run


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("status=7xx", 400, "not a status class"),
        ("sample=2", 400, "is not in (0, 1]"),
        ("location=nowhere", 400, "unknown location(s) ['nowhere']"),
        ("colour=red", 400, "unknown query parameter(s) ['colour']"),
        (f"search={'x' * 300}", 400, "over 256 characters"),
    ],
)
async def test_bad_tail_queries_are_refused_before_any_session(
    control: Control,
    signing_key: SigningKey,
    tmp_path: Path,
    query: str,
    status: int,
    message: str,
) -> None:
    assert (await upload(control, control.token, signing_key, bundle_dir(tmp_path, FN))).is_success
    resp = await control.http.get(f"/v1/tail/{FN}?{query}")
    assert resp.status_code == status, resp.text
    assert message in resp.json()["message"]
    resp = await control.http.get("/v1/tail/nosuch")
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
