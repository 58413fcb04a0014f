"""``edgefn queues list|send|peek|dlq [--replay]``: a planet's queues through the control API.

What a queue holds is read where the nodes keep it (stream ``EDGEFN_Q`` and the partition
records, docs/design/0028-queues.md) by the control plane, which answers only for the caller's
account's queues (``/v1/queues``, edgefn.control.queues_api).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail_from, print_table, utc_ms
from edgefn.cli._planet import JsonOut, StateDir, _client
from edgefn.errors import EdgefnError

QueueName = Annotated[str, typer.Argument(help="Queue name")]
Limit = Annotated[int, typer.Option("--limit", min=1, max=100, help="At most this many")]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    queues = typer.Typer(help="Queues: backlog, sending, peeking and dead letters.")
    queues.command("list")(queues_list)
    queues.command("send")(queues_send)
    queues.command("peek")(queues_peek)
    queues.command("dlq")(queues_dlq)
    app.add_typer(queues, name="queues")


def _call(state_dir: Any, method: str, path: str, **kw: Any) -> Any:
    client = _client(state_dir)
    try:
        return client.api_call(method, path, **kw)
    except EdgefnError as err:
        fail_from(err)


def queues_list(state_dir: StateDir = None, json_out: JsonOut = False) -> None:
    """Every queue of your account: who sends and consumes, backlog, processed, dead letters."""
    queues: list[dict[str, Any]] = []
    after = ""
    while True:  # every page
        page = _call(state_dir, "GET", "/v1/queues", params={"after": after} if after else None)
        queues += page["queues"]
        if not page.get("next"):
            break
        after = page["next"]
    out = {"queues": queues}
    if json_out:
        emit_json(out)
        return
    rows = [
        (
            q["queue"],
            ", ".join(q["producers"]) or "-",
            ", ".join(q["consumers"]) or "-",
            q["backlog"],
            q["retrying"],
            q["processed"],
            q["dead"],
            q["dead_letter_queue"] or "-",
            ", ".join(f"{loc}:{len(p)}" for loc, p in sorted(q["holders"].items())) or "-",
        )
        for q in out["queues"]
    ]
    if not rows:
        typer.echo("no queues yet: a queue exists once a deployed manifest names it")
        return
    columns = ("queue", "producers", "consumers", "backlog", "retrying", "processed", "dead")
    print_table("queues", (*columns, "DLQ", "partitions held"), rows)


def _parse_body(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # not JSON: send it as a string


def queues_send(
    queue: QueueName,
    body: Annotated[str, typer.Argument(help="The message body: JSON, else sent as a string")],
    key: Annotated[str | None, typer.Option(help="Ordering key")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Sending again with this key within 2 h is a no-op")
    ] = None,
    delay_s: Annotated[float, typer.Option(help="Deliver no sooner than this")] = 0.0,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Send one message to QUEUE, as a producer function would."""
    message: dict[str, Any] = {"body": _parse_body(body)}
    if key is not None:
        message["key"] = key
    if idempotency_key is not None:
        message["idempotency_key"] = idempotency_key
    if delay_s:
        message["delay_s"] = delay_s
    out = _call(state_dir, "POST", f"/v1/queues/{queue}/messages", json={"messages": [message]})
    if json_out:
        emit_json(out)
        return
    typer.echo(f"sent {out['ids'][0]} to {queue}")


def _messages_table(title: str, messages: list[dict[str, Any]]) -> None:
    if not messages:
        typer.echo(f"{title}: nothing waiting")
        return
    rows = [
        (
            m["id"][:12],
            m["key"] if m["key"] is not None else "-",
            m["attempts"],
            utc_ms(m["sent_ms"]),
            utc_ms(m["not_before_ms"]) if m["not_before_ms"] else "-",
            json.dumps(m["body"])[:60],
        )
        for m in messages
    ]
    print_table(title, ("id", "key", "attempts", "sent", "not before", "body"), rows)


def queues_peek(
    queue: QueueName, limit: Limit = 20, state_dir: StateDir = None, json_out: JsonOut = False
) -> None:
    """The oldest unfinished messages of QUEUE (not consumed: peeking changes nothing)."""
    out = _call(state_dir, "GET", f"/v1/queues/{queue}/messages", params={"limit": limit})
    if json_out:
        emit_json(out)
        return
    _messages_table(f"{queue}: oldest unfinished", out["messages"])


def queues_dlq(
    queue: QueueName,
    replay: Annotated[
        bool, typer.Option("--replay", help="Move the dead letters back into QUEUE")
    ] = False,
    limit: Limit = 20,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """The messages in QUEUE's dead-letter queue; with --replay, send them to QUEUE again."""
    if replay:
        out = _call(state_dir, "POST", f"/v1/queues/{queue}/dlq/replay", json={"limit": limit})
        if json_out:
            emit_json(out)
            return
        typer.echo(
            f"replayed {len(out['replayed'])} message(s) from {out['dead_letter_queue']} to {queue}"
        )
        return
    out = _call(state_dir, "GET", f"/v1/queues/{queue}/dlq", params={"limit": limit})
    if json_out:
        emit_json(out)
        return
    _messages_table(f"{queue}: dead letters in {out['dead_letter_queue']}", out["messages"])
