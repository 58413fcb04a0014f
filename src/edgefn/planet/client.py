"""Talking to a running planet: what ``edgefn deploy|status|rollback|versions|net`` do.

Commands find the planet through its state directory (``.edgefn/`` by default, ``--state-dir`` or
``EDGEFN_STATE_DIR``), whose ``planet.json`` names the control API, the supervisor API and the link
control API. Every control-API call carries ``Authorization: Bearer <token>``: ``$EDGEFN_TOKEN``,
else the token in ``<state-dir>/credentials.json`` (written by ``edgefn up``). Uploads are signed
with the deployer key (``$EDGEFN_DEPLOYER_KEY`` or ``~/.config/edgefn/deployer-key.pem``) and name
its key id in ``x-edgefn-key-id``. Control-API errors come back as ``{"error", "message", "hint"}``
and are raised as :class:`~edgefn.errors.PlanetError` with the same words.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from edgefn._internal_auth import InternalAuth, planet_secret
from edgefn.bundle import build_bundle, load_or_create_signing_key
from edgefn.bus.link_control import LinkControlClient
from edgefn.errors import PlanetError
from edgefn.planet.credentials import deployer_key_path, read_credentials
from edgefn.planet.supervisor import read_planet


def default_state_dir() -> Path:
    return Path(os.environ.get("EDGEFN_STATE_DIR", ".edgefn"))


class PlanetClient:
    def __init__(self, state_dir: Path | None = None, *, timeout_s: float = 30.0) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.planet = read_planet(self.state_dir)
        self.api = self.planet["api_url"]
        token = read_credentials(self.state_dir).get("token")
        self._auth = {"authorization": f"Bearer {token}"} if token else {}
        self.secret = planet_secret(self.state_dir)
        self._http = httpx.Client(timeout=timeout_s, trust_env=False)
        # The supervisor, link and node-internal APIs only answer signed requests.
        self._internal = httpx.Client(
            timeout=timeout_s, trust_env=False, auth=InternalAuth(self.secret)
        )

    def close(self) -> None:
        self._http.close()
        self._internal.close()

    def _call(self, method: str, url: str, *, signed: bool = False, **kw: Any) -> Any:
        http = self._internal if signed else self._http
        if url.startswith(self.api):
            kw["headers"] = {**self._auth, **kw.get("headers", {})}
        try:
            resp = http.request(method, url, **kw)
        except httpx.HTTPError as err:
            raise PlanetError(
                f"cannot reach {url}: {err}", hint="is the planet still running? `edgefn status`"
            ) from None
        if resp.status_code >= 400:
            self._raise_for(resp)
        return resp.json() if resp.content else {}

    def _raise_for(self, resp: httpx.Response) -> None:
        try:
            body = resp.json()
        except ValueError:
            body = {"message": resp.text}
        hint = str(body.get("hint", ""))
        if resp.status_code == 401 and not self._auth:
            hint = f"no API token: set $EDGEFN_TOKEN or restart the planet; {hint}"
        raise PlanetError(str(body.get("message") or body.get("error") or resp.text), hint=hint)

    # -- control API -----------------------------------------------------------------------
    def upload(self, path: Path) -> dict[str, Any]:
        bundle = build_bundle(path)
        key = load_or_create_signing_key(deployer_key_path())
        result: dict[str, Any] = self._call(
            "POST",
            f"{self.api}/v1/functions/{bundle.manifest.name}/versions",
            content=bundle.data,
            headers={
                "x-edgefn-signature": key.sign(bundle.sha256),
                "x-edgefn-key-id": key.key_id(),
            },
        )
        result["function"] = bundle.manifest.name
        return result

    def deploy(
        self, name: str, version: str, strategy: str, *, allow_no_traffic: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"version": version, "strategy": strategy}
        if allow_no_traffic:
            body["allow_no_traffic"] = True
        out: dict[str, Any] = self._call(
            "POST", f"{self.api}/v1/functions/{name}/deployments", json=body
        )
        return out

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = self._call("GET", f"{self.api}/v1/status")
        return out

    def versions(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self._call("GET", f"{self.api}/v1/functions/{name}/versions")
        return out

    def rollback(self, name: str, to: str | None) -> dict[str, Any]:
        out: dict[str, Any] = self._call(
            "POST", f"{self.api}/v1/functions/{name}/rollback", json={"to": to} if to else {}
        )
        return out

    def api_call(self, method: str, path: str, **kw: Any) -> Any:
        """Any control-API call (``path`` like ``/v1/tokens``), authenticated."""
        return self._call(method, f"{self.api}{path}", **kw)

    def put_secret(self, name: str, secret: str, value: str) -> dict[str, Any]:
        """Set a secret; the answer names it, never echoes the value."""
        out: dict[str, Any] = self._call(
            "PUT", f"{self.api}/v1/functions/{name}/secrets/{secret}", json={"value": value}
        )
        return out

    def list_secrets(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self._call("GET", f"{self.api}/v1/functions/{name}/secrets")
        return out

    def delete_secret(self, name: str, secret: str) -> dict[str, Any]:
        out: dict[str, Any] = self._call(
            "DELETE", f"{self.api}/v1/functions/{name}/secrets/{secret}"
        )
        return out

    def tail(self, name: str, params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        """The lines of ``GET /v1/tail/{name}`` as they arrive (until the caller stops)."""
        url = f"{self.api}/v1/tail/{name}"
        # No read timeout beyond a few missed heartbeats (the core sends one every 5 s).
        timeout = httpx.Timeout(10.0, read=30.0)
        try:
            query = httpx.QueryParams(tuple(params))
            with self._http.stream(
                "GET", url, params=query, headers=self._auth, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_for(resp)
                for line in resp.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as err:
            raise PlanetError(
                f"the tail stream from {url} broke: {err}",
                hint="is the planet still running? `edgefn status`",
            ) from None

    def function_status(self, name: str) -> dict[str, Any] | None:
        for fn in self.status().get("functions", []):
            if fn.get("function") == name:
                return dict(fn)
        return None

    def wait_converged(
        self,
        name: str,
        version: str,
        *,
        timeout_s: float = 120.0,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, float]:
        """Poll until every targeted location serves ``version`` as its only active version.

        Returns location → seconds since the call when it was first seen serving it.
        """
        t0 = time.monotonic()
        seen: dict[str, float] = {}
        while time.monotonic() - t0 < timeout_s:
            status = self.status()
            fn = next((f for f in status.get("functions", []) if f.get("function") == name), None)
            deployment = (fn or {}).get("deployment") or {}
            if (
                deployment.get("status") == "rolled_back"
                and deployment.get("version_id") == version
            ):
                raise PlanetError(
                    f"the rollout of {name} {version} rolled back: {deployment.get('reason', '')}",
                    hint=f"see `edgefn status {name}`",
                )
            targets = set((fn or {}).get("targets", []))
            for loc in status.get("locations", []):
                versions = ((loc.get("observed") or {}).get("functions") or {}).get(name, {})
                if loc["location"] in targets and set(versions) == {version}:
                    seen.setdefault(loc["location"], round(time.monotonic() - t0, 3))
            if on_progress is not None:
                on_progress(len(seen), len(targets))
            if targets and targets <= set(seen) and (fn or {}).get("converged"):
                return seen
            time.sleep(0.05)
        raise PlanetError(
            f"{name} {version} did not converge within {timeout_s:g}s "
            f"({len(seen)} locations serve it)",
            hint="a partitioned location converges after `edgefn net heal`",
        )

    # -- supervisor and links --------------------------------------------------------------
    def kill(self, location: str) -> dict[str, Any]:
        return self._checked(
            self._call(
                "POST",
                f"{self.planet['supervisor_url']}/kill",
                json={"location": location},
                signed=True,
            )
        )

    def revive(self, location: str) -> dict[str, Any]:
        return self._checked(
            self._call(
                "POST",
                f"{self.planet['supervisor_url']}/revive",
                json={"location": location},
                signed=True,
            )
        )

    def skew(self, location: str, clock_skew_ms: int) -> dict[str, Any]:
        """Restart a location's node with its KV clock ``clock_skew_ms`` off (0: true time)."""
        return self._checked(
            self._call(
                "POST",
                f"{self.planet['supervisor_url']}/skew",
                json={"location": location, "clock_skew_ms": clock_skew_ms},
                signed=True,
            )
        )

    def heat(self, location: str, celsius: float | None) -> dict[str, Any]:
        """Emulate ``location``'s temperature (None: back to its sensors) on its node, at once."""
        self._known([location])
        url = next(x["internal_url"] for x in self.planet["locations"] if x["name"] == location)
        out: dict[str, Any] = self._call(
            "POST", f"{url}/_edgefn/thermal", json={"celsius": celsius}, signed=True
        )
        return out

    @staticmethod
    def _checked(out: dict[str, Any]) -> dict[str, Any]:
        if "error" in out:
            raise PlanetError(out["error"], hint=out.get("hint", ""))
        return out

    def _known(self, locations: list[str]) -> None:
        known = {loc["name"] for loc in self.planet["locations"]}
        for loc in locations:
            if loc not in known:
                raise PlanetError(
                    f"unknown location {loc!r}", hint=f"locations: {', '.join(sorted(known))}"
                )

    def _links(self) -> Any:
        return LinkControlClient(self.planet["links_url"], secret=self.secret)

    def partition(self, locations: list[str]) -> dict[str, Any]:
        self._known(locations)
        out = self._links().partition([f"loc-{x}" for x in locations])
        return dict(out)

    def heal(self) -> list[str]:
        return list(self._links().heal())

    def delay(self, a: str, b: str, ms: float) -> str:
        return str(self._links().delay(a, b, ms))

    def links(self) -> list[dict[str, Any]]:
        return list(self._links().links())
