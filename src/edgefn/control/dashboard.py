"""The dashboard's HTTP side: a static page (public) and the one JSON view it polls (``read``).

Routes (declared as ``ScopedRoute``s in :func:`edgefn.control.api.create_app`)::

    GET /dashboard              public   the page (HTML; no planet data in it)
    GET /dashboard/{asset}      public   dashboard.js, dashboard.css, world.svg (fixed list)
    GET /v1/dashboard           read     map, rollouts and health (edgefn.control.dashboard_view)

The page holds no data: every figure comes from token-protected routes the script calls with
``Authorization: Bearer`` (``/v1/whoami``, ``/v1/dashboard``, ``/v1/stats/{name}``,
``/v1/tail/{name}``, ``/v1/incidents``). The operator pastes a token once; the script keeps it in
``sessionStorage`` (gone with the tab, never in a URL, a cookie or a log). Since no cookie
authenticates anything, a page of another origin cannot make an authenticated request (no CSRF).

The assets are package data (``edgefn/control/dashboard_static``), read once when the app is
built; ``world.svg`` is drawn then from the built-in cities and points of presence. Nothing is
fetched from elsewhere at run time, and the Content-Security-Policy says so to the browser:
scripts, styles, images and connections from this origin only, no inline script, no framing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgefn.control.auth import Principal
from edgefn.control.dashboard_view import DashboardOptions, backdrop_svg, dashboard_view
from edgefn.control.errors import NotFound
from edgefn.control.service import ControlService
from edgefn.world import cities, pops

__all__ = ["SECURITY_HEADERS", "DashboardAssets", "dashboard_handlers"]

_PACKAGE: Final = "edgefn.control"
_STATIC: Final = "dashboard_static"
_TYPES: Final = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class DashboardAssets:
    """The page and its assets, in memory: name -> (media type, bytes)."""

    page: bytes
    assets: dict[str, tuple[str, bytes]]

    @classmethod
    def load(cls, options: DashboardOptions) -> DashboardAssets:
        root = resources.files(_PACKAGE).joinpath(_STATIC)
        assets = {name: (kind, root.joinpath(name).read_bytes()) for name, kind in _TYPES.items()}
        points = [(c.lat, c.lon) for c in cities()] + [(p.lat, p.lon) for p in pops()]
        svg = backdrop_svg(points, width=options.width, height=options.height)
        assets["world.svg"] = ("image/svg+xml", svg.encode())
        return cls(root.joinpath("index.html").read_bytes(), assets)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def dashboard_handlers(
    service: ControlService,
    principal_of: Callable[[Request], Principal],
    options: DashboardOptions | None = None,
) -> tuple[Callable[[Request], object], Callable[[Request], object], Callable[[Request], object]]:
    """The handlers of ``/dashboard``, ``/dashboard/{asset}`` and ``/v1/dashboard``
    (``principal_of``: who is asking, as the API's auth middleware found it)."""
    opts = options or DashboardOptions()
    loaded = DashboardAssets.load(opts)

    async def page(_request: Request) -> Response:
        return Response(
            loaded.page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
        )

    async def asset(request: Request) -> Response:
        found = loaded.assets.get(request.path_params["asset"])
        if found is None:
            raise NotFound(
                "no such dashboard asset", hint=f"assets: {', '.join(sorted(loaded.assets))}"
            )
        return Response(found[1], media_type=found[0], headers=SECURITY_HEADERS)

    async def view(request: Request) -> Response:
        # Only the reader's account's functions (an admin sees every one).
        body = dashboard_view(service.status(principal_of(request)), now_ms=_now_ms(), options=opts)
        return JSONResponse(body, headers={"cache-control": "no-store"})

    return page, asset, view
