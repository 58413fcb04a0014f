"""``edgefn token create|list|revoke``, ``edgefn key add|list``, ``edgefn audit`` and
``edgefn kv share``: who may use the control API, with which signing keys, and what they did.

Every command authenticates like ``edgefn deploy`` (``$EDGEFN_TOKEN`` or
``<state-dir>/credentials.json``); most need an ``admin`` token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail, fail_from, print_table, utc_ms
from edgefn.errors import EdgefnError

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir", help="The planet's state directory (default .edgefn, or $EDGEFN_STATE_DIR)"
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON")]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    token = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)
    token.command("create")(token_create)
    token.command("list")(token_list)
    token.command("revoke")(token_revoke)
    app.add_typer(token, name="token")
    key = typer.Typer(help="Deployer public keys that may sign bundles.", no_args_is_help=True)
    key.command("add")(key_add)
    key.command("list")(key_list)
    app.add_typer(key, name="key")
    app.command("audit")(audit)


def _api(state_dir: Path | None, method: str, path: str, **kw: Any) -> Any:
    from edgefn.planet.client import PlanetClient, default_state_dir

    try:
        client = PlanetClient(state_dir or default_state_dir())
        try:
            return client.api_call(method, path, **kw)
        finally:
            client.close()
    except EdgefnError as err:
        fail_from(err)


def token_create(
    name: Annotated[str, typer.Option(help="A label for the token (shown in lists and audit)")],
    scope: Annotated[
        list[str], typer.Option(help="read | deploy:<function> | deploy:* | admin (repeatable)")
    ],
    account: Annotated[
        str | None, typer.Option(help="Account the token acts for (default: yours)")
    ] = None,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Create an API token. It is printed once; only its hash is stored."""
    body: dict[str, Any] = {"name": name, "scopes": scope}
    if account:
        body["account"] = account
    out = _api(state_dir, "POST", "/v1/tokens", json=body)
    if json_out:
        emit_json(out)
        return
    typer.echo(out["token"])
    typer.echo(
        f"token {out['id']} ({', '.join(out['scopes'])}, account {out['account']}): "
        "store it now, it is not shown again",
        err=True,
    )


def token_list(state_dir: StateDir = None, json_out: JsonOut = False) -> None:
    """List tokens: id, name, scopes, account, created, last used (never the secret)."""
    out = _api(state_dir, "GET", "/v1/tokens")
    if json_out:
        emit_json(out)
        return
    rows = [
        [
            t["id"],
            t["name"],
            " ".join(t["scopes"]),
            t["account"],
            utc_ms(t["created_ms"]),
            utc_ms(t["last_used_ms"]),
            "yes" if t["revoked"] else "",
        ]
        for t in out["tokens"]
    ]
    print_table(
        "tokens", ["id", "name", "scopes", "account", "created (UTC)", "last used", "revoked"], rows
    )


def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (from `edgefn token list`)")],
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Revoke a token: it stops working at once."""
    out = _api(state_dir, "DELETE", f"/v1/tokens/{token_id}")
    emit_json(out) if json_out else typer.echo(f"revoked token {out['id']} ({out['name']})")


def key_add(
    pubfile: Annotated[Path, typer.Argument(help="Ed25519 public key PEM file")],
    account: Annotated[
        str | None, typer.Option(help="Account it signs for (default: yours)")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Register a deployer's public key; bundles it signs are accepted for its account."""
    try:
        pem = pubfile.read_text()
    except OSError as err:
        fail(f"{pubfile}: {err}", hint="pass the .pub file of the deployer's key")
    body: dict[str, Any] = {"public_key": pem, "name": name or pubfile.name}
    if account:
        body["account"] = account
    out = _api(state_dir, "POST", "/v1/keys", json=body)
    emit_json(out) if json_out else typer.echo(f"key {out['key_id']} signs for {out['account']}")


def key_list(state_dir: StateDir = None, json_out: JsonOut = False) -> None:
    """List registered deployer keys."""
    out = _api(state_dir, "GET", "/v1/keys")
    if json_out:
        emit_json(out)
        return
    rows = [[k["key_id"], k["account"], k["name"], utc_ms(k["created_ms"])] for k in out["keys"]]
    print_table("deployer keys", ["key id", "account", "name", "created (UTC)"], rows)


def audit(
    limit: Annotated[int, typer.Option(help="Newest N records")] = 200,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Who deployed, rolled back, uploaded, created or revoked a token, and when."""
    out = _api(state_dir, "GET", "/v1/audit", params={"limit": limit})
    if json_out:
        emit_json(out)
        return
    rows = [
        [
            utc_ms(r["at_ms"]),
            r["action"],
            r["target"],
            f"{r['token_name']} ({r['token_id']})",
            r["account"],
            " ".join(f"{k}={v}" for k, v in r["detail"].items()),
        ]
        for r in out["records"]
    ]
    print_table("audit", ["at (UTC)", "action", "target", "by", "account", "detail"], rows)


def kv_share(
    namespace: Annotated[str, typer.Argument(help="KV namespace your account owns")],
    with_account: Annotated[str, typer.Option("--with", help="Account allowed to bind it")],
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Let another account's functions bind NAMESPACE (owner or admin only)."""
    out = _api(state_dir, "POST", f"/v1/kv/{namespace}/shares", json={"account": with_account})
    if json_out:
        emit_json(out)
        return
    typer.echo(f"{namespace} (owner {out['owner']}) shared with {', '.join(out['shared_with'])}")
