"""NATS credentials files: one per role, written by ``edgefn up``, read by each role process.

Layout of ``<state-dir>/creds/`` (every file mode 0600, the directory 0700):

- ``<user>.json`` for each identity — ``control``, ``admin``, ``leaf-<region>``, ``cache-<region>``,
  ``node-<location>``: ``{"user": ..., "password": ..., "ca_file": ...}`` (``ca_file`` only when the
  planet uses TLS; a relative path is relative to the file's directory).
- ``route.json``: the user and password with which the servers of a clustered core authenticate
  their routes to each other (``{"user": "route", "password": ...}``; no NATS client uses it).
- ``core.users.json`` (the core server's users: control, admin, every leaf) and
  ``hub-<region>.users.json`` (a hub's users: its cache and its nodes):
  ``{"users": [{"kind", "scope", "region", "password"}, ...]}``. Passwords are random 32-byte
  URL-safe strings stored in plain text (nats-server compares them; only these files and the
  servers' 0600 config files hold them), so protect the directory like a private key.

A process connects with the credentials of its role: pass them to
:func:`edgefn.bus.jetstream.connect` (``creds=``), or set them once as the process default with
:func:`set_default_credentials` (a role process has exactly one client identity, so every
connection it opens — node agent, KV driver, traffic driver — uses the same one). Passwords already
generated are kept when ``edgefn up`` runs again, so restarted processes can still log in.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefn.bus.errors import BusError
from edgefn.bus.permissions import NatsUser, UserKind

__all__ = [
    "ROUTE_USER",
    "Credentials",
    "default_credentials",
    "load_credentials",
    "load_users",
    "set_default_credentials",
    "write_planet_credentials",
]

_KINDS: tuple[UserKind, ...] = ("control", "admin", "leaf", "cache", "node")
ROUTE_USER = "route"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a NATS client presents: user and password, and the CA that signed the servers."""

    user: str
    password: str
    ca_file: Path | None = None


_default: Credentials | None = None


def set_default_credentials(creds: Credentials | None) -> None:
    """Make ``creds`` what :func:`~edgefn.bus.jetstream.connect` uses when given none."""
    global _default
    _default = creds


def default_credentials() -> Credentials | None:
    return _default


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BusError(
            f"cannot read {what} {path}: {err}",
            hint="pass the file that `edgefn up` wrote to <state-dir>/creds/",
        ) from None
    if not isinstance(data, dict):
        raise BusError(f"{what} {path} is not a JSON object", hint="regenerate it with `edgefn up`")
    return data


def load_credentials(path: Path) -> Credentials:
    """Read a role's ``<user>.json``."""
    data = _read_json(path, "NATS credentials file")
    try:
        user, password = str(data["user"]), str(data["password"])
    except KeyError as err:
        raise BusError(
            f"NATS credentials file {path} lacks {err}", hint="regenerate it with `edgefn up`"
        ) from None
    ca = data.get("ca_file")
    ca_file = None if not ca else (path.parent / str(ca)).resolve()
    return Credentials(user, password, ca_file)


def load_users(path: Path) -> tuple[NatsUser, ...]:
    """Read a server's ``*.users.json``."""
    data = _read_json(path, "NATS users file")
    users = []
    for entry in data.get("users", []):
        kind = entry.get("kind")
        if kind not in _KINDS:
            raise BusError(f"NATS users file {path}: unknown kind {kind!r}", hint=str(_KINDS))
        users.append(
            NatsUser(
                kind=kind,
                password=str(entry["password"]),
                scope=str(entry.get("scope", "")),
                region=str(entry.get("region", "")),
            )
        )
    return tuple(users)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _user(creds_dir: Path, kind: UserKind, scope: str = "", region: str = "") -> NatsUser:
    """The user ``kind-scope`` with its existing password, or a fresh random one."""
    name = f"{kind}-{scope}" if scope else kind
    path = creds_dir / f"{name}.json"
    password = ""
    if path.exists():
        password = load_credentials(path).password
    return NatsUser(kind, password or secrets.token_urlsafe(32), scope, region)


def write_planet_credentials(
    creds_dir: Path,
    *,
    regions: Iterable[str],
    locations: Iterable[tuple[str, str]],
    ca_file: Path | None = None,
) -> dict[str, Path]:
    """Write every role's credentials and the servers' user lists; return ``name -> path``.

    ``locations`` are ``(location, region)`` pairs. Existing passwords are kept.
    """
    creds_dir.mkdir(parents=True, exist_ok=True)
    creds_dir.chmod(0o700)
    core = [_user(creds_dir, "control"), _user(creds_dir, "admin")]
    hubs: dict[str, list[NatsUser]] = {}
    for region in regions:
        core.append(_user(creds_dir, "leaf", region))
        hubs[region] = [_user(creds_dir, "cache", region)]
    for location, region in locations:
        hubs[region].append(_user(creds_dir, "node", location, region))
    out: dict[str, Path] = {}
    for user in [*core, *(u for users in hubs.values() for u in users)]:
        body: dict[str, Any] = {"user": user.name, "password": user.password}
        if ca_file is not None:
            body["ca_file"] = os.path.relpath(ca_file, creds_dir)
        out[user.name] = creds_dir / f"{user.name}.json"
        _write_private(out[user.name], body)
    out["route"] = creds_dir / "route.json"
    route_password = load_credentials(out["route"]).password if out["route"].exists() else ""
    _write_private(
        out["route"],
        {"user": ROUTE_USER, "password": route_password or secrets.token_urlsafe(32)},
    )
    for name, users in [("core", core), *((f"hub-{r}", u) for r, u in hubs.items())]:
        out[f"{name}.users"] = creds_dir / f"{name}.users.json"
        _write_private(out[f"{name}.users"], {"users": [_user_entry(u) for u in users]})
    return out


def _user_entry(user: NatsUser) -> dict[str, str]:
    return {
        "kind": user.kind,
        "scope": user.scope,
        "region": user.region,
        "password": user.password,
    }
