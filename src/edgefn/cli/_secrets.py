"""``edgefn secret put|list|delete``: a function's secrets, through the control API.

``put`` reads the value from stdin (one trailing newline removed, so ``echo "$V" |`` works) or,
at a terminal, from a hidden prompt. A value on the command line would end up in shell history
and in ``ps`` output for every user of the machine, so a positional value or ``--value`` is
refused (exit code 2) before anything is read or sent.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail, fail_from, print_table
from edgefn.cli._planet import JsonOut, StateDir, _client, _wait
from edgefn.errors import EdgefnError

_ARGV_REFUSED = "secret values are not accepted on the command line (shell history, ps)"
_ARGV_HINT = 'pipe the value on stdin: printf %s "$VALUE" | edgefn secret put FUNCTION NAME'

Function = Annotated[str, typer.Argument(help="Function name")]
Name = Annotated[str, typer.Argument(help="Secret name, like an environment variable: API_KEY")]
Wait = Annotated[bool, typer.Option(help="Wait until every location serves the change")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait with --wait")]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    secret = typer.Typer(help="Encrypted secrets of a function, available as env.NAME.")
    secret.command("put")(secret_put)
    secret.command("list")(secret_list)
    secret.command("delete")(secret_delete)
    app.add_typer(secret, name="secret")


def _read_value(name: str) -> str:
    import getpass

    if sys.stdin is None:
        fail("no stdin to read the secret value from", hint=_ARGV_HINT)
    if sys.stdin.isatty():
        value = getpass.getpass(f"Value for {name}: ")
    else:
        value = sys.stdin.read()
        value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    if not value:
        fail("the secret value is empty", hint=_ARGV_HINT)
    return value


def _rollout(client: Any, out: dict[str, Any], wait: bool, timeout: float, quiet: bool) -> None:
    deployment = out.get("deployment")
    if wait and deployment:
        out["convergence_s"] = _wait(
            client, out["function"], deployment["version_id"], timeout, quiet=quiet
        )


def _describe(out: dict[str, Any], verb: str) -> str:
    deployment = out.get("deployment")
    rollout = (
        f"rolling out as {deployment['deployment_id']}"
        if deployment
        else "no version is deployed yet: it applies from the first deploy"
    )
    return f"{verb} secret {out['name']} of {out['function']} (generation {out['generation']}); {rollout}"


def secret_put(
    function: Function,
    name: Name,
    extra: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
    value: Annotated[str | None, typer.Option("--value", hidden=True)] = None,
    wait: Wait = False,
    timeout: Timeout = 120.0,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Set secret NAME of FUNCTION from stdin (or a hidden prompt); rolls it out immediately."""
    from edgefn.secrets.names import validate_function_name, validate_secret_name

    if extra or value is not None:
        fail(_ARGV_REFUSED, hint=_ARGV_HINT, code=2)
    try:
        validate_function_name(function)
        validate_secret_name(name)
    except EdgefnError as err:
        fail_from(err)
    secret_value = _read_value(name)
    client = _client(state_dir)
    try:
        out = client.put_secret(function, name, secret_value)
        _rollout(client, out, wait, timeout, json_out)
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
    else:
        typer.echo(_describe(out, "stored"))


def secret_list(function: Function, state_dir: StateDir = None, json_out: JsonOut = False) -> None:
    """List the names of FUNCTION's secrets and when each was last set (never values)."""
    client = _client(state_dir)
    try:
        out = client.list_secrets(function)
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
        return
    rows = [
        (
            s["name"],
            datetime.fromtimestamp(s["updated_ms"] / 1000, UTC).isoformat(timespec="seconds"),
        )
        for s in out["secrets"]
    ]
    print_table(f"secrets of {function}", ["name", "updated (UTC)"], rows)


def secret_delete(
    function: Function,
    name: Name,
    wait: Wait = False,
    timeout: Timeout = 120.0,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Delete secret NAME of FUNCTION; the change rolls out immediately."""
    client = _client(state_dir)
    try:
        out = client.delete_secret(function, name)
        _rollout(client, out, wait, timeout, json_out)
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
    else:
        typer.echo(_describe(out, "deleted"))
