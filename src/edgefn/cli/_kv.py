"""``edgefn kv get|put|delete|list`` against one location's replica, and ``edgefn bench kv``.

The commands call ``/_edgefn/kv/<ns>/<key>`` on the internal listener (``internal_url`` in
``planet.json``) of the location named by ``--at`` (default: the planet's first location), each
request signed with the planet secret from the state directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefn.cli._access import kv_share
from edgefn.cli._output import emit_json, fail, fail_from, print_table
from edgefn.errors import EdgefnError

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir", help="The planet's state directory (default .edgefn, or $EDGEFN_STATE_DIR)"
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON")]
At = Annotated[str, typer.Option("--at", help="Location whose replica serves (default: first)")]
Level = Annotated[str, typer.Option("--consistency", help="eventual | session | causal | strong")]
Session = Annotated[str, typer.Option("--session", help="Session token (x-edgefn-session)")]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    kv = typer.Typer(help="Read and write KV namespaces at a location's replica.")
    kv.command("get")(kv_get)
    kv.command("put")(kv_put)
    kv.command("delete")(kv_delete)
    kv.command("list")(kv_list)
    kv.command("share")(kv_share)
    app.add_typer(kv, name="kv")
    bench.command("kv")(bench_kv)


def _location_url(state_dir: Path | None, at: str) -> tuple[str, bytes]:
    """The internal URL of location ``at`` and the planet secret that signs requests to it."""
    from edgefn._internal_auth import planet_secret
    from edgefn.planet.client import default_state_dir
    from edgefn.planet.supervisor import read_planet

    sd = state_dir or default_state_dir()
    try:
        planet = read_planet(sd)
        secret = planet_secret(sd)
    except EdgefnError as err:
        fail_from(err)
    locations = planet["locations"]
    for loc in locations:
        if not at or loc["name"] == at:
            if not loc.get("internal_url"):
                fail(
                    f"location {loc['name']} announces no internal listener",
                    hint="restart the planet with this version of edgefn (`edgefn down; edgefn up`)",
                )
            return str(loc["internal_url"]), secret
    fail(
        f"unknown location {at!r}",
        hint=f"locations: {', '.join(loc['name'] for loc in locations)}",
    )


def _request(
    method: str,
    state_dir: Path | None,
    at: str,
    path: str,
    params: dict[str, str],
    content: bytes | None = None,
) -> dict[str, Any]:
    import httpx

    from edgefn._internal_auth import InternalAuth

    base, secret = _location_url(state_dir, at)
    url = base + path
    query = {k: v for k, v in params.items() if v}
    try:
        resp = httpx.request(
            method,
            url,
            params=query,
            content=content,
            timeout=30,
            auth=InternalAuth(secret),
            trust_env=False,
        )
    except httpx.HTTPError as err:
        fail(
            f"location {at or 'first'} at {url} did not answer: {err}",
            hint="check `edgefn status`; the node may be killed (`edgefn net revive`)",
        )
    body: dict[str, Any] = resp.json()
    if resp.status_code != 200:
        fail(
            f"{method} {path} at {body.get('location', at)}: {body.get('error')}: "
            f"{body.get('message', '')}",
            hint=str(body.get("hint", "")),
        )
    return body


def _show(body: dict[str, Any], json_out: bool, fields: list[str]) -> None:
    if json_out:
        emit_json(body)
        return
    print_table("edgefn kv", ["field", "value"], [[f, body.get(f)] for f in fields])


def _key_path(namespace: str, key: str = "") -> str:
    from urllib.parse import quote

    return f"/_edgefn/kv/{quote(namespace, safe='')}" + (f"/{quote(key, safe='')}" if key else "")


def kv_get(
    namespace: str,
    key: str,
    at: At = "",
    consistency: Level = "eventual",
    session: Session = "",
    json_out: JsonOut = False,
    state_dir: StateDir = None,
) -> None:
    """Read KEY (value, revision, metadata) at a location's replica."""
    params = {"consistency": consistency, "session": session}
    body = _request("GET", state_dir, at, _key_path(namespace, key), params)
    _show(body, json_out, ["location", "key", "value", "revision", "metadata", "session"])


def kv_put(
    namespace: str,
    key: str,
    value: str,
    at: At = "",
    consistency: Level = "eventual",
    session: Session = "",
    if_revision: Annotated[
        int | None, typer.Option(help="Write only if the key is at this revision (0: absent)")
    ] = None,
    ttl_s: Annotated[float | None, typer.Option(help="Expire after this many seconds")] = None,
    json_out: JsonOut = False,
    state_dir: StateDir = None,
) -> None:
    """Write VALUE (UTF-8) to KEY at a location's replica."""
    params = {"consistency": consistency, "session": session}
    params |= {"if_revision": "" if if_revision is None else str(if_revision)}
    params |= {"ttl_s": "" if ttl_s is None else str(ttl_s)}
    body = _request("PUT", state_dir, at, _key_path(namespace, key), params, value.encode())
    _show(body, json_out, ["location", "key", "revision", "session"])


def kv_delete(
    namespace: str,
    key: str,
    at: At = "",
    consistency: Level = "eventual",
    session: Session = "",
    if_revision: Annotated[int | None, typer.Option(help="Delete only at this revision")] = None,
    json_out: JsonOut = False,
    state_dir: StateDir = None,
) -> None:
    """Delete KEY at a location's replica."""
    params = {"consistency": consistency, "session": session}
    params |= {"if_revision": "" if if_revision is None else str(if_revision)}
    body = _request("DELETE", state_dir, at, _key_path(namespace, key), params)
    _show(body, json_out, ["location", "key", "revision", "session"])


def kv_list(
    namespace: str,
    prefix: Annotated[str, typer.Option(help="Only keys starting with this")] = "",
    limit: Annotated[int, typer.Option(help="At most this many keys (1-1000)")] = 1000,
    cursor: Annotated[str, typer.Option(help="Continue after this cursor")] = "",
    at: At = "",
    consistency: Level = "eventual",
    session: Session = "",
    json_out: JsonOut = False,
    state_dir: StateDir = None,
) -> None:
    """List keys of NAMESPACE at a location's replica."""
    params = {"prefix": prefix, "limit": str(limit), "cursor": cursor}
    params |= {"consistency": consistency, "session": session}
    body = _request("GET", state_dir, at, _key_path(namespace), params)
    if json_out:
        emit_json(body)
        return
    rows = [[k["name"], k["revision"], k.get("metadata")] for k in body["keys"]]
    print_table(f"{namespace} at {body['location']}", ["key", "revision", "metadata"], rows)


def bench_kv(
    locations: Annotated[int, typer.Option(help="Locations of the planet to start")] = 50,
    writes: Annotated[int, typer.Option(help="Eventual writes to time to every location")] = 20,
    reads: Annotated[int, typer.Option(help="Function reads to time")] = 200,
    strong: Annotated[int, typer.Option(help="Strong writes per location measured")] = 20,
    duration: Annotated[float, typer.Option(help="Seconds of write load per location")] = 3.0,
    json_out: JsonOut = False,
    out: Annotated[Path | None, typer.Option(help="Write the result JSON here")] = None,
) -> None:
    """Propagation to every location, function read latency, strong write latency, writes/s."""
    from edgefn.bench import kv

    if locations < 2 or writes < 1 or reads < 1 or strong < 1 or duration <= 0:
        fail("--locations must be >= 2 and --writes/--reads/--strong/--duration positive")
    if not json_out:
        typer.echo(f"starting a {locations}-location planet with RTT emulation ...", err=True)
    try:
        result = kv.run(
            locations=locations, writes=writes, reads=reads, strong=strong, duration_s=duration
        )
    except EdgefnError as err:
        fail_from(err)
    target = out or (Path("benchmarks/results/kv.json") if json_out else None)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2) + "\n")
    if json_out:
        emit_json(result)
        return
    prop, read = result["propagation_ms"], result["function_read_ms"]
    rows = [
        ["propagation p50/p99/max", f"{prop['p50']} / {prop['p99']} / {prop['max']} ms"],
        ["slowest link RTT", f"{result['slowest_link_rtt_ms']} ms"],
        ["function read p50/p99", f"{read['p50']} / {read['p99']} ms"],
        ["strong write near p50", f"{result['strong_write_ms']['near']['p50']} ms"],
        ["strong write far p50", f"{result['strong_write_ms']['far']['p50']} ms"],
        ["writes/s per location", result["writes_per_s_per_location"]],
    ]
    print_table("edgefn bench kv", ["measure", "value"], rows)
