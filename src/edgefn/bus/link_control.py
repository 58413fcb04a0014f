"""Client of a running :class:`~edgefn.bus.link_group.LinkEmulatorGroup`'s control API.

Blocking (httpx.Client), because its caller is the CLI (``edgefn net partition|heal|delay``): one
request per command. Every failure becomes a :class:`BusError` (or :class:`LinkTableError` for an
unknown endpoint) that names the URL and says what to do.
"""

from __future__ import annotations

from typing import Any

import httpx

from edgefn._internal_auth import InternalAuth
from edgefn.bus.errors import BusError, LinkTableError

__all__ = ["LinkControlClient"]


class LinkControlClient:
    """Talks to the link emulator's control API at ``base_url`` (``http://127.0.0.1:<port>``)."""

    def __init__(
        self, base_url: str, *, timeout_s: float = 5.0, secret: bytes | None = None
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s
        # The planet's control API only answers requests signed with the planet secret.
        self._auth = InternalAuth(secret) if secret is not None else None

    def links(self) -> list[dict[str, Any]]:
        links: list[dict[str, Any]] = self._call("GET", "/links")["links"]
        return links

    def partition(self, endpoints: list[str]) -> dict[str, list[str]]:
        """Cut every link leaving ``endpoints``; return {"cut": [...], "separating": [...]}."""
        out: dict[str, list[str]] = self._call("POST", "/partition", {"endpoints": endpoints})
        return out

    def heal(self) -> list[str]:
        healed: list[str] = self._call("POST", "/heal")["healed"]
        return healed

    def delay(self, a: str, b: str, rtt_ms: float) -> str:
        name: str = self._call("POST", "/delay", {"a": a, "b": b, "rtt_ms": rtt_ms})["link"]
        return name

    def _call(self, method: str, path: str, body: object = None) -> Any:
        url = f"{self._base}{path}"
        try:
            resp = httpx.request(
                method, url, json=body, timeout=self._timeout_s, auth=self._auth, trust_env=False
            )
        except httpx.HTTPError as err:
            raise BusError(
                f"link emulator control API at {url} is unreachable: {err!r}",
                hint="is the planet running (`edgefn up`)? check the control URL it printed",
            ) from None
        try:
            payload = resp.json()
        except ValueError:
            payload = {"detail": resp.text[:200]}
        if resp.status_code in (401, 403):
            raise BusError(
                f"{method} {url} refused the request ({resp.status_code}: "
                f"{payload.get('reason', payload.get('error', ''))})",
                hint="sign it with the planet secret (<state-dir>/planet-secret); "
                "the CLI does this when run against the planet's --state-dir",
            )
        if resp.status_code == 404:
            raise LinkTableError(
                f"{method} {url}: {payload.get('detail', 'not found')}",
                hint=payload.get("hint") or f"list the links with GET {self._base}/links",
            )
        if resp.status_code != 200:
            raise BusError(
                f"{method} {url} answered {resp.status_code}: {payload.get('detail', '')}",
                hint=payload.get("hint") or "check the arguments (docs/design/0007-backbone.md)",
            )
        return payload
