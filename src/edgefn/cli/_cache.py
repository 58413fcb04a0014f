"""``edgefn cache purge``: drop a function's responses from the edge cache, planet-wide.

The control plane publishes the purge on the bus; every node and region tier drops what it names
at once (docs/design/0026-edge-cache.md). Give tags (the origin's ``Cache-Tag`` values), URLs
(as the function requested them from its origin), or ``--everything``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from edgefn.cli._output import emit_json, fail, fail_from
from edgefn.cli._planet import JsonOut, StateDir, _client
from edgefn.errors import EdgefnError

Function = Annotated[str, typer.Argument(help="Function name")]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    cache = typer.Typer(help="The edge cache in front of a function's [[origins]].")
    cache.command("purge")(cache_purge)
    app.add_typer(cache, name="cache")


def cache_purge(
    function: Function,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A Cache-Tag (repeatable)")] = None,
    url: Annotated[
        list[str] | None, typer.Option("--url", help="An origin URL (repeatable)")
    ] = None,
    everything: Annotated[bool, typer.Option(help="Every response of the function")] = False,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Purge FUNCTION's cached responses by tag, by URL or all of them, at every location."""
    tags, urls = list(tag or []), list(url or [])
    if not (tags or urls or everything):
        fail(
            "nothing to purge",
            hint=f"give --tag TAG, --url URL or --everything: edgefn cache purge {function} --tag t",
            code=2,
        )
    client = _client(state_dir)
    body: dict[str, object] = {"tags": tags, "urls": urls, "everything": everything}
    try:
        out = client.api_call("POST", f"/v1/functions/{function}/cache/purge", json=body)
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
        return
    what = ["everything"] if everything else [*(f"tag {t}" for t in tags), *urls]
    typer.echo(f"purged {', '.join(what)} of {function} at every location")
