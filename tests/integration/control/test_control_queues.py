"""``/v1/queues`` on a real core (JetStream + HTTP): pages, and what an account sees.

The whole flow (send, peek, dead letters, replay, other accounts) runs on a planet in
tests/integration/planet/test_queues_cli.py; this checks what needs no node.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _control_fixtures import Control, bearer, bundle_dir, new_token, upload

from edgefn.bundle import SigningKey
from edgefn.control import queues_api

pytestmark = pytest.mark.integration


async def test_the_list_comes_in_pages_and_only_with_the_accounts_queues(
    control: Control, signing_key: SigningKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "".join(f'[[queues.producers]]\nbinding = "Q{i}"\nqueue = "q{i}"\n' for i in range(5))
    resp = await upload(
        control, control.token, signing_key, bundle_dir(tmp_path, "fn", extra=extra)
    )
    assert resp.status_code == 201, resp.text
    monkeypatch.setattr(queues_api, "LIST_PAGE", 2)
    seen, after, pages = [], "", 0
    while True:
        params = {"after": after} if after else {}
        page = (await control.http.get("/v1/queues", params=params)).json()
        pages += 1
        seen += [q["queue"] for q in page["queues"]]
        if not page["next"]:
            break
        after = page["next"]
    assert (seen, pages) == (["q0", "q1", "q2", "q3", "q4"], 3)
    first = (await control.http.get("/v1/queues")).json()["queues"][0]
    assert {k: first[k] for k in ("owner", "backlog", "processed", "dead", "holders")} == {
        "owner": "default",
        "backlog": 0,
        "processed": 0,
        "dead": 0,
        "holders": {},
    }
    # The function is not deployed: no producer is active yet.
    assert first["producers"] == []
    other = await new_token(control, ["read"], account="other")
    resp = await control.http.get("/v1/queues", headers=bearer(other))
    assert resp.json() == {"queues": [], "next": None}
    resp = await control.http.get("/v1/queues/q0/messages", headers=bearer(other))
    assert (resp.status_code, resp.json()["owner"]) == (403, "default")
    resp = await control.http.get("/v1/queues/q0/messages", params={"limit": "0"})
    assert (resp.status_code, resp.json()["error"]) == (400, "bad_request")
    resp = await control.http.post("/v1/queues/q0/messages", json={"messages": []})
    assert resp.status_code == 400
    assert "messages" in resp.json()["message"]
    resp = await control.http.post(
        "/v1/queues/q0/messages", json={"messages": [{"body": 1, "colour": "red"}]}
    )
    assert "unknown message field(s) ['colour']" in resp.json()["message"]
    flood = b'{"messages": [' + b" " * (queues_api.BODY_MAX + 1) + b"]}"
    resp = await control.http.post("/v1/queues/q0/messages", content=flood)
    assert (resp.status_code, resp.json()["error"]) == (413, "too_large")
    resp = await control.http.get("/v1/queues/q0/dlq")
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
    assert "has no dead-letter queue" in resp.json()["message"]
