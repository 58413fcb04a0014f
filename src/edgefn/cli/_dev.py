"""``edgefn new`` (scaffold a function) and ``edgefn dev`` (serve it locally with hot reload)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from edgefn.cli._output import fail, fail_from
from edgefn.errors import EdgefnError

_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("new")(new)
    app.command("dev")(dev)


def new(
    name: Annotated[str, typer.Argument(help="Function name: lower-case letters, digits, '-'")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to create it (default: ./NAME)")
    ] = None,
) -> None:
    """Scaffold a new function (edgefn.toml, main.py and a test)."""
    from edgefn.cli._scaffold import FILES

    if not _NAME_RE.match(name):
        fail(
            f"invalid function name {name!r}",
            hint="use 1-63 lower-case letters, digits and '-', not starting or ending with '-'",
        )
    target = directory or Path(name)
    if target.exists() and any(target.iterdir()):
        fail(f"{target} already exists and is not empty", hint="choose another name or --dir")
    for rel, template in FILES.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(name=name))
    typer.echo(f"Created {target}/ with edgefn.toml, main.py and tests/test_main.py")
    typer.echo(f"Next: edgefn dev {target}   then   curl http://127.0.0.1:8787/?name=you")


def dev(
    path: Annotated[Path, typer.Argument(help="Function directory (with edgefn.toml)")] = Path("."),
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8787,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    location: Annotated[str, typer.Option(help="Location name to report")] = "local",
    reload: Annotated[bool, typer.Option(help="Reload when files change")] = True,
    isolation: Annotated[
        str, typer.Option(help="Sandbox isolation: strict (every layer, else refuse) | relaxed")
    ] = "strict",
    test_scheduled: Annotated[
        bool,
        typer.Option(
            "--test-scheduled",
            help="Serve /__scheduled?cron=EXPR[&time=MS]: it runs the function's "
            "`scheduled(event, env, ctx)` once (crons do not fire by themselves under dev)",
        ),
    ] = False,
) -> None:
    """Serve the function in PATH locally, reloading it when its files change."""
    import asyncio

    from edgefn.bundle import load_manifest

    if not 0 <= port <= 65535:
        fail(f"--port {port} is out of range", hint="use a port from 1 to 65535")
    try:
        manifest = load_manifest(path)
    except EdgefnError as err:
        fail_from(err)
    try:
        asyncio.run(
            _dev(
                path.resolve(),
                manifest.name,
                host,
                port,
                location,
                reload,
                isolation,
                test_scheduled,
            )
        )
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM (see _dev)
        typer.echo("stopped")


async def _dev(
    path: Path,
    name: str,
    host: str,
    port: int,
    location: str,
    reload: bool,
    isolation: str,
    test_scheduled: bool,
) -> None:
    import asyncio
    import signal

    from edgefn.edge import EdgeNode, FunctionTable

    # SIGTERM (a supervisor, `kill`) stops the node as Ctrl-C does: its workers and temporary
    # files go with it.
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    node = EdgeNode(
        location,
        host=host,
        port=port,
        isolation="relaxed" if isolation == "relaxed" else "strict",
        ready=False,  # healthy only once the function is loaded
        # `edgefn dev` serves one function: a request whose Host names no function gets it.
        table=FunctionTable(default=name),
        test_scheduled=test_scheduled,
    )
    try:
        await node.start()
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err}", hint="pick another --port")
    except EdgefnError as err:
        fail_from(err)
    try:
        try:
            version = await node.deploy_dir(path)
        except EdgefnError as err:
            fail_from(err)
        node.mark_ready()
        typer.echo(
            f"Serving {name} ({version}) at {node.url}/  (also http://{name}.localhost:{node.port}/)"
        )
        if test_scheduled:
            typer.echo(f"Cron: curl '{node.url}/__scheduled?cron=*+*+*+*+*' runs `scheduled` once.")
        typer.echo("Edit the files to reload; Ctrl-C to stop.")
        if reload:
            await _watch(node, path)
        else:
            await asyncio.Event().wait()
    finally:
        await node.stop()


async def _watch(node: object, path: Path) -> None:
    from watchfiles import awatch

    from edgefn.edge import EdgeNode

    assert isinstance(node, EdgeNode)
    async for changes in awatch(path, debounce=100, step=20):
        relevant = [c for c in changes if "__pycache__" not in c[1] and "/.edgefn" not in c[1]]
        if not relevant:
            continue
        try:
            version = await node.deploy_dir(path)
        except EdgefnError as err:
            typer.echo(f"reload failed, still serving the previous version:\n  {err}", err=True)
            continue
        typer.echo(f"reloaded: now serving {version}")
