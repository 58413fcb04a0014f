"""The ``edgefn.toml`` schema: parse, validate, and describe every mistake precisely.

How it works: ``tomllib`` turns the text into plain dicts, then one small validator per section
walks its table against a declared set of keys. Every problem raises ``ManifestError`` carrying
the file path, the dotted key (``limits.cpu_ms``, ``kv_namespaces[1].binding``), the expected type
or range, and a hint (a close spelling for unknown keys, the allowed values otherwise). Validation
stops at the first error so that the message is about one thing.

The schema::

    name = "hello"                  # [a-z0-9-]{1,63}, not starting or ending with '-'
    main = "main.py"                # relative .py path inside the function directory
    routes = ["example.com/api/*"]  # host ("*." allowed) + path glob, or [[routes]] pattern
    [vars]                          # identifier = str | int | float | bool
    [limits]                        # cpu_ms, memory_mb, timeout_ms, max_body_kb, subrequests,
                                    # requests_per_s, scratch_mb, startup_ms (see LIMIT_BOUNDS)
    [egress] allow = ["api.example.com", "*.example.org:443"]   # absent = any public host
             allow_private = ["127.0.0.1:9000", "localhost:8080", "[::1]"]  # local development
    [[kv_namespaces]] binding = "CACHE"  namespace = "cache-v1"
    [placement] mode = "everywhere" | "regions" | "smart"; regions = [...]; affinity =
                "header:<name>" | "cookie:<name>"; retry_safe = false; with "smart" (the
                planner places it from observed demand): min_replicas = 2, max_latency_ms
    [runtime] preload = ["json", "re"]   # modules each worker imports at load, before main
    [triggers] crons = ["*/5 * * * *"]  # cron triggers (UTC): main defines `async def scheduled`
               prefer = "low_carbon"    # optional: the cleanest live location runs each tick
    [[queues.producers]] binding = "JOBS"  queue = "jobs"      # env.JOBS.send(body, key=...)
    [[queues.consumers]] queue = "jobs"  max_batch_size = 10 ...  # main defines `async def queue`

This module is pure: it reads files only in ``load_manifest``, and imports no driver.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Final

from edgefn.bundle._hostport import split_host_port
from edgefn.bundle.crons import MAX_CRONS, check_cron
from edgefn.errors import ManifestError

__all__ = [
    "CDN_HOOKS",
    "CONSUMER_BOUNDS",
    "LIMIT_BOUNDS",
    "MANIFEST_FILENAME",
    "PLACEMENT_MODES",
    "Cdn",
    "DurableObjectClass",
    "Egress",
    "KVNamespace",
    "Limits",
    "Manifest",
    "Origin",
    "Placement",
    "QueueConsumer",
    "QueueProducer",
    "Queues",
    "Route",
    "Runtime",
    "Triggers",
    "load_manifest",
    "parse_manifest",
]

MANIFEST_FILENAME: Final = "edgefn.toml"
PLACEMENT_MODES: Final = ("everywhere", "regions", "smart")

# Inclusive bounds; generous enough for real functions, tight enough to catch unit mistakes
# (a timeout given in seconds, a memory limit given in bytes).
LIMIT_BOUNDS: Final[Mapping[str, tuple[float, float]]] = MappingProxyType(
    {
        "cpu_ms": (1, 300_000),
        "memory_mb": (16, 4096),
        "timeout_ms": (1, 900_000),
        # A request body travels to the worker inside one IPC frame (runtime/protocol.py caps
        # frames at 16 MiB, headers included), so a larger limit would fail after admission.
        "max_body_kb": (1, 15_360),
        "subrequests": (0, 1000),
        "requests_per_s": (0.001, 1_000_000),
        "scratch_mb": (1, 1024),
        "startup_ms": (100, 60_000),
    }
)

_NAME_RE: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_NAMESPACE_RE: Final = re.compile(r"^[a-z0-9_-]{1,63}$")
_REGION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE: Final = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*(?::(\d{{1,5}}))?$")
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
_MODULE_RE: Final = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_PATH_GLOB_RE: Final = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
_TOML_POS_RE: Final = re.compile(r"\(at line (\d+), column (\d+)\)")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request resource limits, enforced by the node and the sandbox supervisor."""

    cpu_ms: int = 1000
    memory_mb: int = 128
    timeout_ms: int = 30000
    max_body_kb: int = 1024
    subrequests: int = 50
    requests_per_s: float | None = None
    scratch_mb: int = 16  # size of the worker's private /tmp (a tmpfs) and its RLIMIT_FSIZE
    startup_ms: int = 10_000  # how long importing `main` may take before the load fails


@dataclass(frozen=True, slots=True)
class Egress:
    """Hosts function code may fetch. ``None`` allows any public host; ``()`` allows none.

    Non-public addresses (loopback, private, link-local, ...) are refused unless ``allow_private``
    names the host or address (``host``, ``ip`` or ``[ipv6]``, optionally ``:port``).
    """

    allow: tuple[str, ...] | None = None
    allow_private: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KVNamespace:
    """A KV namespace bound into ``env`` under ``binding``."""

    binding: str
    namespace: str


@dataclass(frozen=True, slots=True)
class Origin:
    """An origin bound into ``env`` under ``binding``: ``env.<binding>.fetch(path)`` requests
    ``url`` + path through the edge cache (the location, then its region's hub, then the origin)
    when ``cache`` is true (docs/design/0026-edge-cache.md). The origin's host needs no ``[egress]``
    entry; a loopback or private one still needs ``[egress] allow_private``."""

    binding: str
    url: str  # http(s)://host[:port][/base path], without query or fragment; no trailing slash
    cache: bool = True


@dataclass(frozen=True, slots=True)
class DurableObjectClass:
    """``env.<binding>``: the namespace of durable objects of class ``class_name`` (defined in
    ``main``, a subclass of ``edgefn.DurableObject``); docs/design/0027-durable-objects.md."""

    binding: str
    class_name: str


CDN_HOOKS: Final = ("viewer_request", "origin_request", "origin_response", "viewer_response")


@dataclass(frozen=True, slots=True)
class Cdn:
    """``[cdn]``: the function is a CDN in front of ``origin`` (an ``[[origins]]`` binding), and
    these handlers of ``main`` (their names; "" when absent) run at CloudFront's four points:
    ``viewer_request`` and ``viewer_response`` around the edge cache on every request,
    ``origin_request`` and ``origin_response`` between this location's cache and the origin on
    a miss. ``main`` then defines no ``fetch`` (docs/design/0026-edge-cache.md)."""

    origin: str
    viewer_request: str = ""
    origin_request: str = ""
    origin_response: str = ""
    viewer_response: str = ""

    def hooks(self) -> dict[str, str]:
        return {h: getattr(self, h) for h in CDN_HOOKS if getattr(self, h)}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the function runs and how requests stick to a location."""

    mode: str = "everywhere"
    regions: tuple[str, ...] = ()
    affinity: str | None = None
    retry_safe: bool = False
    # mode "smart" only (docs/design/0029-smart-placement.md): the planner runs it at no fewer
    # than ``min_replicas`` locations (all of them when the planet has fewer), and every client
    # region should be within ``max_latency_ms`` (RTT) of one (None: no bound).
    min_replicas: int = 2
    max_latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """A host + path glob such as ``example.com/api/*``."""

    pattern: str


@dataclass(frozen=True, slots=True)
class Runtime:
    """Sandbox options. ``preload``: modules (installed or in the bundle) every worker of the
    function imports when it loads, inside the sandbox and before ``main``, so a module the code
    imports lazily is not imported during a request; one that fails to import fails the load.
    (A node's own ``--preload`` list is imported once by its zygote for every function.)"""

    preload: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Triggers:
    """Cron triggers: each expression fires ``scheduled(event, env, ctx)`` once per tick,
    planet-wide (docs/design/0025-cron.md); validated by :func:`edgefn.bundle.crons.check_cron`."""

    crons: tuple[str, ...] = ()
    # Which location runs a tick: "any" (the first to claim it), or "low_carbon" (the live
    # location on the cleanest grid claims first; the next cleanest within seconds if it did not).
    prefer: str = "any"


TRIGGER_PREFERENCES: Final = ("any", "low_carbon")


@dataclass(frozen=True, slots=True)
class QueueProducer:
    """``env.<binding>``: ``send``/``send_batch`` messages to ``queue`` (docs/design/0028-queues.md)."""

    binding: str
    queue: str


@dataclass(frozen=True, slots=True)
class QueueConsumer:
    """``queue``'s messages are handed to ``async def queue(batch, env, ctx)`` of ``main``, in
    batches of at most ``max_batch_size`` (sooner when the oldest waited ``max_batch_timeout_ms``);
    a message failing more than ``max_retries`` times goes to ``dead_letter_queue`` (dropped when
    it is empty); retries wait ``retry_delay_s``, doubling each time; at most ``max_concurrency``
    batches run at once at a location."""

    queue: str
    max_batch_size: int = 10
    max_batch_timeout_ms: int = 5_000
    max_retries: int = 3
    retry_delay_s: float = 1.0
    dead_letter_queue: str = ""
    max_concurrency: int = 4


@dataclass(frozen=True, slots=True)
class Queues:
    producers: tuple[QueueProducer, ...] = ()
    consumers: tuple[QueueConsumer, ...] = ()


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated ``edgefn.toml``. ``path`` is where it was read from (for messages)."""

    name: str
    main: str = "main.py"
    vars: Mapping[str, str | int | float | bool] = field(
        default_factory=lambda: MappingProxyType({})
    )
    limits: Limits = Limits()
    egress: Egress = Egress()
    kv_namespaces: tuple[KVNamespace, ...] = ()
    placement: Placement = Placement()
    routes: tuple[Route, ...] = ()
    runtime: Runtime = Runtime()
    triggers: Triggers = Triggers()
    origins: tuple[Origin, ...] = ()
    cdn: Cdn | None = None
    durable_objects: tuple[DurableObjectClass, ...] = ()
    queues: Queues = Queues()
    path: str = ""


class _Ctx:
    """Carries the file path so every helper can raise a fully located error."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, message: str, hint: str = "") -> ManifestError:
        return ManifestError(message, path=self.path, key=key, hint=hint)


def _type_name(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
    return names.get(type(value), "table" if isinstance(value, dict) else type(value).__name__)


def _check_keys(ctx: _Ctx, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in table:
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
        raise ctx.fail(f"{prefix}{key}", "unknown key", hint)


def _table(ctx: _Ctx, value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ctx.fail(key, f"expected a table, got {_type_name(value)}", f"write it as [{key}]")
    return value


def _string(ctx: _Ctx, value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ctx.fail(key, f"expected a string, got {_type_name(value)}", "quote the value")
    return value


def _strings(ctx: _Ctx, value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ctx.fail(key, f"expected an array of strings, got {_type_name(value)}")
    return tuple(_string(ctx, item, f"{key}[{i}]") for i, item in enumerate(value))


def _parse_name(ctx: _Ctx, value: object) -> str:
    name = _string(ctx, value, "name")
    if not _NAME_RE.match(name):
        raise ctx.fail(
            "name",
            f"invalid function name {name!r}",
            "use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        )
    return name


def _parse_main(ctx: _Ctx, value: object) -> str:
    main = _string(ctx, value, "main")
    pure = PurePosixPath(main)
    hint = "give a relative path to a .py file inside the function directory, like 'main.py'"
    if "\\" in main or pure.is_absolute() or ".." in pure.parts or not main:
        raise ctx.fail("main", f"{main!r} is not a relative path inside the directory", hint)
    if pure.suffix != ".py":
        raise ctx.fail("main", f"{main!r} is not a .py file", hint)
    return pure.as_posix()


def _parse_vars(ctx: _Ctx, value: object) -> Mapping[str, str | int | float | bool]:
    table = _table(ctx, value, "vars")
    out: dict[str, str | int | float | bool] = {}
    for name, item in table.items():
        if not name.isidentifier():
            raise ctx.fail(f"vars.{name}", "variable names must be identifiers", "e.g. API_URL")
        if not isinstance(item, str | int | float | bool):
            raise ctx.fail(
                f"vars.{name}",
                f"expected a string, integer, float or boolean, got {_type_name(item)}",
                "encode structured values as a JSON string",
            )
        out[name] = item
    return MappingProxyType(out)


def _parse_limit(ctx: _Ctx, key: str, value: object) -> int | float:
    low, high = LIMIT_BOUNDS[key]
    dotted = f"limits.{key}"
    is_float_key = key == "requests_per_s"
    ok_type = isinstance(value, int | float) if is_float_key else isinstance(value, int)
    if isinstance(value, bool) or not ok_type:
        expected = "a number" if is_float_key else "an integer"
        raise ctx.fail(dotted, f"expected {expected}, got {_type_name(value)}", "write e.g. 100")
    assert isinstance(value, int | float)
    if not low <= value <= high:
        raise ctx.fail(dotted, f"{value} is out of range", f"use a value from {low:g} to {high:g}")
    return float(value) if is_float_key else value


def _parse_limits(ctx: _Ctx, value: object) -> Limits:
    table = _table(ctx, value, "limits")
    _check_keys(ctx, table, tuple(LIMIT_BOUNDS), "limits.")
    parsed = {key: _parse_limit(ctx, key, item) for key, item in table.items()}
    return Limits(**parsed)  # type: ignore[arg-type]


def _parse_host(ctx: _Ctx, host: str, key: str) -> str:
    lowered = host.lower()
    match = _HOST_RE.match(lowered)
    if not match or (match.group(1) is not None and not 1 <= int(match.group(1)) <= 65535):
        raise ctx.fail(
            key, f"invalid host {host!r}", "use a hostname, '*.example.com', optionally ':port'"
        )
    return lowered


def _parse_private(ctx: _Ctx, entry: str, key: str) -> str:
    try:
        host, port = split_host_port(entry)
    except ValueError as err:
        raise ctx.fail(
            key,
            f"invalid allow_private entry: {err}",
            "use 'localhost:8080', '127.0.0.1:9000' or '[::1]:9000' (the port is optional)",
        ) from None
    shown = f"[{host}]" if ":" in host else host
    return shown + (f":{port}" if port is not None else "")


def _parse_egress(ctx: _Ctx, value: object) -> Egress:
    table = _table(ctx, value, "egress")
    _check_keys(ctx, table, ("allow", "allow_private"), "egress.")
    allow: tuple[str, ...] | None = None
    if "allow" in table:
        hosts = _strings(ctx, table["allow"], "egress.allow")
        allow = tuple(_parse_host(ctx, h, f"egress.allow[{i}]") for i, h in enumerate(hosts))
    entries = _strings(ctx, table.get("allow_private", []), "egress.allow_private")
    private = tuple(
        _parse_private(ctx, e, f"egress.allow_private[{i}]") for i, e in enumerate(entries)
    )
    return Egress(allow=allow, allow_private=private)


def _parse_kv(ctx: _Ctx, value: object) -> tuple[KVNamespace, ...]:
    if not isinstance(value, list):
        raise ctx.fail(
            "kv_namespaces", f"expected an array of tables, got {_type_name(value)}", _KV_HINT
        )
    out: list[KVNamespace] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        key = f"kv_namespaces[{i}]"
        table = _table(ctx, item, key)
        _check_keys(ctx, table, ("binding", "namespace"), f"{key}.")
        for required in ("binding", "namespace"):
            if required not in table:
                raise ctx.fail(f"{key}.{required}", "missing required key", _KV_HINT)
        binding = _string(ctx, table["binding"], f"{key}.binding")
        namespace = _string(ctx, table["namespace"], f"{key}.namespace")
        if not binding.isidentifier():
            raise ctx.fail(f"{key}.binding", f"{binding!r} is not an identifier", "e.g. CACHE")
        if binding in seen:
            raise ctx.fail(f"{key}.binding", f"duplicate binding {binding!r}", "rename one")
        if not _NAMESPACE_RE.match(namespace):
            raise ctx.fail(
                f"{key}.namespace", f"invalid namespace {namespace!r}", "use 1-63 of a-z 0-9 - _"
            )
        seen.add(binding)
        out.append(KVNamespace(binding=binding, namespace=namespace))
    return tuple(out)


_KV_HINT: Final = 'write [[kv_namespaces]] with binding = "CACHE" and namespace = "cache"'
_ORIGIN_HINT: Final = 'write [[origins]] with binding = "ORIGIN" and url = "https://example.com"'
MAX_ORIGINS: Final = 8


def _parse_origin_url(ctx: _Ctx, url: str, key: str) -> str:
    scheme, sep, rest = url.partition("://")
    hostport, _, base = rest.partition("/")
    if sep == "" or scheme not in ("http", "https") or not hostport:
        raise ctx.fail(key, f"invalid origin url {url!r}", "use http(s)://host[:port][/path]")
    if "?" in url or "#" in url or "@" in hostport or any(ord(c) <= 0x20 for c in url):
        raise ctx.fail(
            key,
            f"invalid origin url {url!r}: no query, fragment, credentials or spaces",
            "use http(s)://host[:port][/path]",
        )
    try:
        split_host_port(hostport)
    except ValueError as err:
        raise ctx.fail(key, f"invalid origin url {url!r}: {err}", "check the host") from None
    return f"{scheme}://{hostport.lower()}" + (f"/{base}".rstrip("/") if base else "")


def _parse_origins(ctx: _Ctx, value: object) -> tuple[Origin, ...]:
    if not isinstance(value, list):
        raise ctx.fail(
            "origins", f"expected an array of tables, got {_type_name(value)}", _ORIGIN_HINT
        )
    if len(value) > MAX_ORIGINS:
        raise ctx.fail("origins", f"{len(value)} origins, at most {MAX_ORIGINS}", "merge some")
    out: list[Origin] = []
    for i, item in enumerate(value):
        key = f"origins[{i}]"
        table = _table(ctx, item, key)
        _check_keys(ctx, table, ("binding", "url", "cache"), f"{key}.")
        for required in ("binding", "url"):
            if required not in table:
                raise ctx.fail(f"{key}.{required}", "missing required key", _ORIGIN_HINT)
        binding = _string(ctx, table["binding"], f"{key}.binding")
        if not binding.isidentifier():
            raise ctx.fail(f"{key}.binding", f"{binding!r} is not an identifier", "e.g. ORIGIN")
        if binding in {o.binding for o in out}:
            raise ctx.fail(f"{key}.binding", f"duplicate binding {binding!r}", "rename one")
        url = _parse_origin_url(ctx, _string(ctx, table["url"], f"{key}.url"), f"{key}.url")
        cache = table.get("cache", True)
        if not isinstance(cache, bool):
            raise ctx.fail(f"{key}.cache", f"expected true or false, got {_type_name(cache)}")
        out.append(Origin(binding=binding, url=url, cache=cache))
    return tuple(out)


def _parse_affinity(ctx: _Ctx, value: object) -> str:
    text = _string(ctx, value, "placement.affinity")
    kind, _, name = text.partition(":")
    if kind not in ("header", "cookie") or not _TOKEN_RE.match(name):
        raise ctx.fail(
            "placement.affinity",
            f"invalid affinity {text!r}",
            "use 'header:<name>' or 'cookie:<name>'",
        )
    return f"{kind}:{name.lower()}" if kind == "header" else text


def _parse_placement(ctx: _Ctx, value: object) -> Placement:
    table = _table(ctx, value, "placement")
    keys = ("mode", "regions", "affinity", "retry_safe", *_SMART_KEYS)
    _check_keys(ctx, table, keys, "placement.")
    mode = _string(ctx, table.get("mode", "everywhere"), "placement.mode")
    if mode not in PLACEMENT_MODES:
        raise ctx.fail("placement.mode", f"unknown mode {mode!r}", f"use one of {PLACEMENT_MODES}")
    smart = _parse_smart(ctx, table, mode)
    regions = _strings(ctx, table.get("regions", []), "placement.regions")
    for i, region in enumerate(regions):
        if not _REGION_RE.match(region):
            raise ctx.fail(f"placement.regions[{i}]", f"invalid region {region!r}", "e.g. 'eu'")
    if mode == "regions" and not regions:
        raise ctx.fail(
            "placement.regions", "mode 'regions' needs at least one region", "e.g. ['eu']"
        )
    affinity = _parse_affinity(ctx, table["affinity"]) if "affinity" in table else None
    retry_safe = table.get("retry_safe", False)
    if not isinstance(retry_safe, bool):
        raise ctx.fail(
            "placement.retry_safe",
            f"expected a boolean, got {_type_name(retry_safe)}",
            "true/false",
        )
    return Placement(mode=mode, regions=regions, affinity=affinity, retry_safe=retry_safe, **smart)


_SMART_KEYS = ("min_replicas", "max_latency_ms")
MAX_SMART_REPLICAS: Final = 64


def _parse_smart(ctx: _Ctx, table: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """``min_replicas`` and ``max_latency_ms``, which only mode "smart" reads."""
    out: dict[str, Any] = {}
    for key in _SMART_KEYS:
        if key not in table:
            continue
        if mode != "smart":
            raise ctx.fail(
                f"placement.{key}",
                f"{key} applies only to mode 'smart' (the mode here is {mode!r})",
                'set mode = "smart", or remove the key',
            )
        value = table[key]
        if key == "min_replicas":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ctx.fail(f"placement.{key}", f"expected an integer, got {_type_name(value)}")
            if not 1 <= value <= MAX_SMART_REPLICAS:
                raise ctx.fail(
                    f"placement.{key}", f"{value} is out of range", f"use 1..{MAX_SMART_REPLICAS}"
                )
            out[key] = value
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ctx.fail(f"placement.{key}", f"expected a number, got {_type_name(value)}")
            if not 1 <= value <= 10_000:
                raise ctx.fail(
                    f"placement.{key}", f"{value} is out of range", "use 1..10000 (ms of RTT)"
                )
            out[key] = float(value)
    return out


def _parse_route(ctx: _Ctx, value: object, key: str) -> Route:
    if isinstance(value, dict):
        _check_keys(ctx, value, ("pattern",), f"{key}.")
        if "pattern" not in value:
            raise ctx.fail(f"{key}.pattern", "missing required key", 'e.g. "example.com/api/*"')
        key, value = f"{key}.pattern", value["pattern"]
    pattern = _string(ctx, value, key)
    host, slash, path = pattern.partition("/")
    hint = "write host + path glob, like 'example.com/api/*' or '*.example.com/*'"
    if not slash or not _HOST_RE.match(host.lower()) or not _PATH_GLOB_RE.match("/" + path):
        raise ctx.fail(key, f"invalid route pattern {pattern!r}", hint)
    return Route(pattern=f"{host.lower()}/{path}")


def _parse_routes(ctx: _Ctx, value: object) -> tuple[Route, ...]:
    if not isinstance(value, list):
        raise ctx.fail("routes", f"expected an array, got {_type_name(value)}", 'e.g. ["a.com/*"]')
    return tuple(_parse_route(ctx, item, f"routes[{i}]") for i, item in enumerate(value))


MAX_PRELOAD: Final = 64


def _parse_runtime(ctx: _Ctx, value: object) -> Runtime:
    table = _table(ctx, value, "runtime")
    _check_keys(ctx, table, ("preload",), "runtime.")
    modules = _strings(ctx, table.get("preload", []), "runtime.preload")
    if len(modules) > MAX_PRELOAD:
        raise ctx.fail(
            "runtime.preload", f"{len(modules)} modules, at most {MAX_PRELOAD}", "list fewer"
        )
    for i, module in enumerate(modules):
        if not _MODULE_RE.match(module):
            raise ctx.fail(
                f"runtime.preload[{i}]", f"invalid module name {module!r}", "e.g. 'json'"
            )
    return Runtime(preload=modules)


def _parse_triggers(ctx: _Ctx, value: object) -> Triggers:
    table = _table(ctx, value, "triggers")
    _check_keys(ctx, table, ("crons", "prefer"), "triggers.")
    prefer = table.get("prefer", "any")
    if prefer not in TRIGGER_PREFERENCES:
        raise ctx.fail(
            "triggers.prefer",
            f"unknown preference {prefer!r}",
            'write prefer = "low_carbon" (the cleanest grid runs each tick) or "any"',
        )
    crons = _strings(ctx, table.get("crons", []), "triggers.crons")
    if len(crons) > MAX_CRONS:
        raise ctx.fail(
            "triggers.crons", f"{len(crons)} crons, at most {MAX_CRONS}", "combine or drop some"
        )
    for i, cron in enumerate(crons):
        problem = check_cron(cron)
        if problem is not None:
            raise ctx.fail(
                f"triggers.crons[{i}]",
                f"invalid cron {cron!r}: {problem}",
                "write five fields in UTC, e.g. '*/5 * * * *' (every 5 minutes) or '0 3 * * MON'",
            )
        if cron in crons[:i]:
            raise ctx.fail(f"triggers.crons[{i}]", f"duplicate cron {cron!r}", "list it once")
    return Triggers(crons=crons, prefer=prefer)


MAX_DURABLE_CLASSES: Final = 8
_DO_HINT: Final = 'write [[durable_objects]] with binding = "ROOM" and class_name = "Room"'


def _parse_durable(ctx: _Ctx, value: object) -> tuple[DurableObjectClass, ...]:
    if not isinstance(value, list):
        raise ctx.fail(
            "durable_objects", f"expected an array of tables, got {_type_name(value)}", _DO_HINT
        )
    if len(value) > MAX_DURABLE_CLASSES:
        raise ctx.fail(
            "durable_objects", f"{len(value)} classes, at most {MAX_DURABLE_CLASSES}", "merge some"
        )
    out: list[DurableObjectClass] = []
    for i, item in enumerate(value):
        key = f"durable_objects[{i}]"
        table = _table(ctx, item, key)
        _check_keys(ctx, table, ("binding", "class_name"), f"{key}.")
        for required in ("binding", "class_name"):
            if required not in table:
                raise ctx.fail(f"{key}.{required}", "missing required key", _DO_HINT)
        binding = _string(ctx, table["binding"], f"{key}.binding")
        class_name = _string(ctx, table["class_name"], f"{key}.class_name")
        for field_name, name in (("binding", binding), ("class_name", class_name)):
            if not name.isidentifier() or not name.isascii():
                raise ctx.fail(
                    f"{key}.{field_name}", f"{name!r} is not an identifier", "e.g. ROOM / Room"
                )
        if binding in {d.binding for d in out}:
            raise ctx.fail(f"{key}.binding", f"duplicate binding {binding!r}", "rename one")
        out.append(DurableObjectClass(binding, class_name))
    return tuple(out)


MAX_QUEUE_BINDINGS: Final = 8
_QUEUE_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_PRODUCER_HINT: Final = 'write [[queues.producers]] with binding = "JOBS" and queue = "jobs"'
_CONSUMER_HINT: Final = 'write [[queues.consumers]] with queue = "jobs"'
# [[queues.consumers]] numbers: key -> (type, low, high).
CONSUMER_BOUNDS: Final[Mapping[str, tuple[type, float, float]]] = MappingProxyType(
    {
        "max_batch_size": (int, 1, 100),
        "max_batch_timeout_ms": (int, 0, 60_000),
        "max_retries": (int, 0, 100),
        "retry_delay_s": (float, 0, 3600),
        "max_concurrency": (int, 1, 16),
    }
)


def _queue_name(ctx: _Ctx, value: object, key: str) -> str:
    name = _string(ctx, value, key)
    if not _QUEUE_RE.match(name):
        raise ctx.fail(
            key, f"invalid queue name {name!r}", "use 1-63 of a-z 0-9 - _, starting a-z or 0-9"
        )
    return name


def _array_of_tables(ctx: _Ctx, value: object, key: str, hint: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise ctx.fail(key, f"expected an array of tables, got {_type_name(value)}", hint)
    if len(value) > MAX_QUEUE_BINDINGS:
        raise ctx.fail(key, f"{len(value)} entries, at most {MAX_QUEUE_BINDINGS}", "merge some")
    return [_table(ctx, item, f"{key}[{i}]") for i, item in enumerate(value)]


def _parse_producer(ctx: _Ctx, table: Mapping[str, Any], key: str) -> QueueProducer:
    _check_keys(ctx, table, ("binding", "queue"), f"{key}.")
    for required in ("binding", "queue"):
        if required not in table:
            raise ctx.fail(f"{key}.{required}", "missing required key", _PRODUCER_HINT)
    binding = _string(ctx, table["binding"], f"{key}.binding")
    if not binding.isidentifier() or not binding.isascii():
        raise ctx.fail(f"{key}.binding", f"{binding!r} is not an identifier", "e.g. JOBS")
    return QueueProducer(binding, _queue_name(ctx, table["queue"], f"{key}.queue"))


def _parse_consumer(ctx: _Ctx, table: Mapping[str, Any], key: str) -> QueueConsumer:
    _check_keys(ctx, table, ("queue", "dead_letter_queue", *CONSUMER_BOUNDS), f"{key}.")
    if "queue" not in table:
        raise ctx.fail(f"{key}.queue", "missing required key", _CONSUMER_HINT)
    queue = _queue_name(ctx, table["queue"], f"{key}.queue")
    numbers: dict[str, Any] = {}
    for name, (kind, low, high) in CONSUMER_BOUNDS.items():
        if name not in table:
            continue
        value = table[name]
        ok = isinstance(value, int | float) if kind is float else isinstance(value, int)
        if isinstance(value, bool) or not ok:
            raise ctx.fail(f"{key}.{name}", f"expected a number, got {_type_name(value)}")
        if not low <= value <= high:
            raise ctx.fail(f"{key}.{name}", f"{value} is out of range", f"use {low:g}..{high:g}")
        numbers[name] = kind(value)
    dlq = ""
    if "dead_letter_queue" in table:
        dlq = _queue_name(ctx, table["dead_letter_queue"], f"{key}.dead_letter_queue")
        if dlq == queue:
            raise ctx.fail(
                f"{key}.dead_letter_queue",
                "a queue cannot be its own dead-letter queue",
                "name another queue",
            )
    return QueueConsumer(queue, dead_letter_queue=dlq, **numbers)


def _queue_entries(
    ctx: _Ctx,
    table: Mapping[str, Any],
    name: str,
    hint: str,
    parse: Callable[[_Ctx, Mapping[str, Any], str], Any],
    unique: str,
    twice: str,
) -> tuple[Any, ...]:
    """The ``[[queues.<name>]]`` entries, each ``unique`` field value at most once."""
    out: list[Any] = []
    for i, item in enumerate(_array_of_tables(ctx, table.get(name, []), f"queues.{name}", hint)):
        entry = parse(ctx, item, f"queues.{name}[{i}]")
        value = getattr(entry, unique)
        if value in {getattr(e, unique) for e in out}:
            raise ctx.fail(f"queues.{name}[{i}].{unique}", twice.format(value), "list each once")
        out.append(entry)
    return tuple(out)


def _parse_queues(ctx: _Ctx, value: object) -> Queues:
    table = _table(ctx, value, "queues")
    _check_keys(ctx, table, ("producers", "consumers"), "queues.")
    return Queues(
        _queue_entries(
            ctx,
            table,
            "producers",
            _PRODUCER_HINT,
            _parse_producer,
            "binding",
            "duplicate binding {!r}",
        ),
        _queue_entries(
            ctx,
            table,
            "consumers",
            _CONSUMER_HINT,
            _parse_consumer,
            "queue",
            "queue {!r} is consumed twice",
        ),
    )


def _parse_cdn(ctx: _Ctx, value: object) -> Cdn:
    table = _table(ctx, value, "cdn")
    _check_keys(ctx, table, ("origin", *CDN_HOOKS), "cdn.")
    if "origin" not in table:
        raise ctx.fail(
            "cdn.origin", "missing required key", 'name an [[origins]] binding: origin = "ORIGIN"'
        )
    names = {
        key: _string(ctx, table[key], f"cdn.{key}")
        for key in ("origin", *CDN_HOOKS)
        if key in table
    }
    for key, name in names.items():
        if not name.isidentifier():
            raise ctx.fail(
                f"cdn.{key}", f"{name!r} is not an identifier", "the name of an async def in main"
            )
    return Cdn(**names)


_SECTIONS: Final[Mapping[str, Callable[[_Ctx, object], object]]] = MappingProxyType(
    {
        "name": _parse_name,
        "main": _parse_main,
        "vars": _parse_vars,
        "limits": _parse_limits,
        "egress": _parse_egress,
        "kv_namespaces": _parse_kv,
        "placement": _parse_placement,
        "routes": _parse_routes,
        "runtime": _parse_runtime,
        "triggers": _parse_triggers,
        "origins": _parse_origins,
        "cdn": _parse_cdn,
        "durable_objects": _parse_durable,
        "queues": _parse_queues,
    }
)


def parse_manifest(text: str, *, path: str) -> Manifest:
    """Parse and validate manifest ``text``; ``path`` is only used in error messages."""
    ctx = _Ctx(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        pos = _TOML_POS_RE.search(str(err))
        where = f" at line {pos.group(1)}, column {pos.group(2)}" if pos else ""
        detail = _TOML_POS_RE.sub("", str(err)).strip()
        raise ManifestError(
            f"invalid TOML{where}: {detail}", path=path, hint="fix the TOML syntax there"
        ) from None
    _check_keys(ctx, data, tuple(_SECTIONS), "")
    if "name" not in data:
        raise ctx.fail("name", "missing required key", 'add name = "my-function" at the top')
    fields = {key: parse(ctx, data[key]) for key, parse in _SECTIONS.items() if key in data}
    manifest = Manifest(**fields, path=path)  # type: ignore[arg-type]
    taken = {kv.binding for kv in manifest.kv_namespaces} | set(manifest.vars)
    for i, origin in enumerate(manifest.origins):
        if origin.binding in taken:
            raise ctx.fail(
                f"origins[{i}].binding",
                f"{origin.binding!r} is already a [vars] name or a KV binding",
                "give each binding of env its own name",
            )
    taken |= {o.binding for o in manifest.origins}
    for i, durable in enumerate(manifest.durable_objects):
        if durable.binding in taken:
            raise ctx.fail(
                f"durable_objects[{i}].binding",
                f"{durable.binding!r} is already a [vars] name, a KV or an origin binding",
                "give each binding of env its own name",
            )
    taken |= {d.binding for d in manifest.durable_objects}
    for i, producer in enumerate(manifest.queues.producers):
        if producer.binding in taken:
            raise ctx.fail(
                f"queues.producers[{i}].binding",
                f"{producer.binding!r} is already a [vars] name or another binding",
                "give each binding of env its own name",
            )
    if manifest.cdn is not None and manifest.cdn.origin not in {
        o.binding for o in manifest.origins
    }:
        raise ctx.fail(
            "cdn.origin",
            f"{manifest.cdn.origin!r} is not an [[origins]] binding",
            'declare it: [[origins]] binding = "ORIGIN" url = "https://..."',
        )
    return manifest


def load_manifest(dir_or_file: Path) -> Manifest:
    """Read ``edgefn.toml`` from a function directory (or the file itself) and validate it.

    Besides the schema, checks that the ``main`` module exists next to the manifest.
    """
    path = dir_or_file / MANIFEST_FILENAME if dir_or_file.is_dir() else dir_or_file
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            "no manifest found",
            path=str(path),
            hint=f"create one with `edgefn new NAME`, or write {MANIFEST_FILENAME} by hand",
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(
            f"cannot read manifest: {err}", path=str(path), hint="check the file"
        ) from None
    manifest = parse_manifest(text, path=str(path))
    if not (path.parent / manifest.main).is_file():
        raise ManifestError(
            f"main module {manifest.main!r} does not exist in {path.parent}",
            path=str(path),
            key="main",
            hint=f"create {manifest.main} defining `async def fetch(request, env, ctx)`",
        )
    return manifest
