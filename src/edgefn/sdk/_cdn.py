"""``[cdn]``: a function that is a CDN in front of one origin, with CloudFront's four hooks.

    [[origins]]
    binding = "ORIGIN"
    url = "https://shop.example.com"

    [cdn]
    origin = "ORIGIN"
    viewer_request = "viewer_request"      # each optional: the name of an async def in main
    origin_request = "origin_request"
    origin_response = "origin_response"
    viewer_response = "viewer_response"

The platform serves every request (``main`` defines no ``fetch``):

1. ``viewer_request(request, env, ctx)``, on every request: return None (go on), a ``Request``
   (go on with it: a rewritten path, headers, ...) or a ``Response`` (answered at once, the
   cache and the origin are not asked);
2. the location's edge cache answers if it can (``x-edgefn-cache: HIT``);
3. on a miss, ``origin_request(request, env, ctx)``: its request is the one going upstream (with
   the conditional headers of a revalidation); None, a ``Request`` (still below the origin's
   URL: the node checks) or a ``Response`` (used as the origin's answer, and cached by its
   Cache-Control like one);
4. upstream: the region hub's tier, then the origin;
5. ``origin_response(request, response, env, ctx)``: None or a ``Response``; what it returns is
   what this location stores (by the viewer's URL) and serves;
6. ``viewer_response(request, response, env, ctx)``, on every response (hits too): None or a
   ``Response``.

The origin hooks run at the location, on its misses (the region tier sits below them and keeps
the origin's own answer). Each hook is checked at load to be an ``async def``; one that returns
anything else fails the request with a message naming it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from edgefn.sdk._origin import Origin
from edgefn.sdk._request import Request
from edgefn.sdk._response import Response

__all__ = ["CdnHooks", "cdn_handler", "load_hooks"]

Hook = Callable[..., Awaitable[Any]]
_SIGNATURES = {
    "viewer_request": "async def {name}(request, env, ctx)",
    "origin_request": "async def {name}(request, env, ctx)",
    "origin_response": "async def {name}(request, response, env, ctx)",
    "viewer_response": "async def {name}(request, response, env, ctx)",
}


@dataclass(frozen=True, slots=True)
class CdnHooks:
    viewer_request: Hook | None = None
    origin_request: Hook | None = None
    origin_response: Hook | None = None
    viewer_response: Hook | None = None

    @property
    def at_origin(self) -> bool:
        return self.origin_request is not None or self.origin_response is not None


def load_hooks(module: ModuleType, hooks: dict[str, str], *, main: str) -> CdnHooks:
    """The module's hooks named by ``[cdn]`` (point -> function name), each checked to be an
    ``async def``; the module must not define ``fetch``. Raises RuntimeError naming the problem
    (the worker and ``edgefn.testing`` share this check)."""
    import inspect  # lazy: only a [cdn] function's load needs it

    if getattr(module, "fetch", None) is not None:
        raise RuntimeError(
            f"{main}: a [cdn] function defines no `fetch`: the platform serves its requests "
            "through the hooks (answer in viewer_request instead)"
        )
    found: dict[str, Hook] = {}
    for point, name in hooks.items():
        signature = _SIGNATURES[point].format(name=name)
        fn = getattr(module, name, None)
        if fn is None:
            raise RuntimeError(
                f"{main}: [cdn] {point} = {name!r}, but it defines no `{name}`; add `{signature}`"
            )
        if not inspect.iscoroutinefunction(fn):
            raise RuntimeError(f"{main}: [cdn] {point}: `{name}` must be declared `{signature}`")
        found[point] = fn
    return CdnHooks(**found)


def _checked(point: str, out: object, allowed: tuple[type, ...]) -> Any:
    if out is None or isinstance(out, allowed):
        return out
    names = " or ".join(t.__name__ for t in allowed)
    raise TypeError(f"[cdn] {point} returned {type(out).__name__}; return None or a {names}")


def cdn_handler(
    origin: Origin, hooks: CdnHooks
) -> Callable[[Request, Any, Any], Awaitable[Response]]:
    """The ``fetch`` the platform runs for a ``[cdn]`` function."""

    async def fetch(request: Request, env: Any, ctx: Any) -> Response:
        req = request
        if hooks.viewer_request is not None:
            out = _checked(
                "viewer_request", await hooks.viewer_request(request, env, ctx), (Request, Response)
            )
            if isinstance(out, Response):
                return out
            req = out or request
        if hooks.at_origin:

            async def on_request(r: Request) -> Request | Response | None:
                if hooks.origin_request is None:
                    return None
                out = await hooks.origin_request(r, env, ctx)
                return _checked("origin_request", out, (Request, Response))  # type: ignore[no-any-return]

            async def on_response(r: Request, resp: Response) -> Response | None:
                if hooks.origin_response is None:
                    return None
                out = await hooks.origin_response(r, resp, env, ctx)
                return _checked("origin_response", out, (Response,))  # type: ignore[no-any-return]

            resp = await origin.fetch_hooked(req, on_request, on_response)
        else:
            resp = await origin.fetch(req)
        if hooks.viewer_response is not None:
            out = _checked(
                "viewer_response", await hooks.viewer_response(req, resp, env, ctx), (Response,)
            )
            resp = out or resp
        return resp

    return fetch
