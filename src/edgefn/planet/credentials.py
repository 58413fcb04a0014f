"""Where the CLI's credentials live: the API token and the deployer's private signing key.

- ``<state-dir>/credentials.json`` (mode 0600, written by ``edgefn up``): ``{"api_url", "token"}``,
  the bootstrap admin token the core wrote to ``<state-dir>/core/admin-token`` on first start.
  ``$EDGEFN_TOKEN`` overrides the token.
- The deployer key (Ed25519, PKCS#8 PEM, mode 0600): ``$EDGEFN_DEPLOYER_KEY``, else
  ``$XDG_CONFIG_HOME/edgefn/deployer-key.pem`` (``~/.config/edgefn/deployer-key.pem``). It lives
  outside the planet's state directory on purpose: node processes read that directory, and a
  node must never hold a key that can sign bundles. Nodes get public keys only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from edgefn._private_file import write_private_file
from edgefn.errors import PlanetError

__all__ = [
    "ADMIN_TOKEN_FILE",
    "CREDENTIALS_FILE",
    "DEPLOYER_PUBLIC_KEY_FILE",
    "TOKEN_ENV",
    "dashboard_hint",
    "deployer_key_path",
    "read_credentials",
    "write_credentials",
]

CREDENTIALS_FILE: Final = "credentials.json"
ADMIN_TOKEN_FILE: Final = "core/admin-token"
DEPLOYER_PUBLIC_KEY_FILE: Final = "deployer-key.pub"
TOKEN_ENV: Final = "EDGEFN_TOKEN"
DEPLOYER_KEY_ENV: Final = "EDGEFN_DEPLOYER_KEY"


def deployer_key_path() -> Path:
    explicit = os.environ.get(DEPLOYER_KEY_ENV)
    if explicit:
        return Path(explicit)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "edgefn" / "deployer-key.pem"


def dashboard_hint(api_url: str, credentials: str) -> str:
    """Where the planet's dashboard is and where its token is (never the token itself)."""
    return (
        f"dashboard: {api_url.rstrip('/')}/dashboard\n"
        f'  log in with the "token" of {credentials}, e.g. '
        f'python3 -c \'import json; print(json.load(open("{credentials}"))["token"])\'\n'
        f"  or a read-only one: edgefn token create --name dashboard --scope read "
        f"--state-dir {Path(credentials).parent}"
    )


def write_credentials(state_dir: Path, *, api_url: str, token: str) -> Path:
    path = state_dir / CREDENTIALS_FILE
    data = json.dumps({"api_url": api_url, "token": token}, indent=2) + "\n"
    write_private_file(path, data.encode("ascii"))
    return path


def read_credentials(state_dir: Path) -> dict[str, Any]:
    """``{"api_url", "token"}`` from the state directory, with ``$EDGEFN_TOKEN`` winning."""
    path = state_dir / CREDENTIALS_FILE
    creds: dict[str, Any] = {}
    try:
        creds = dict(json.loads(path.read_text()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:
        raise PlanetError(
            f"{path}: cannot read credentials: {err}",
            hint=f"restart the planet (`edgefn up`) or set ${TOKEN_ENV}",
        ) from None
    env = os.environ.get(TOKEN_ENV)
    if env:
        creds["token"] = env.strip()
    return creds
