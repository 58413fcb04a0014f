"""Notification routes for incidents: a TOML file mapping regions to webhook URLs.

The file (``edgefn core --incident-routes FILE``, ``edgefn up --incident-routes FILE``)::

    default = "https://hooks.example.net/oncall"     # any region not listed below

    [regions]
    eu-west = "https://hooks.example.net/eu"
    na-east = "http://127.0.0.1:9000/na"

An incident is sent to the route of each of its regions (a region without one goes to
``default``; no default: not sent), each URL once. A URL is ``http`` or ``https`` with a host,
at most 2,048 characters; any host is allowed, loopback included: the operator wrote the file.
Anything else in the file is refused with a :class:`~edgefn.errors.ConfigError` naming the file
and key, before the core starts.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edgefn.errors import ConfigError

__all__ = ["Routes", "load_routes", "parse_routes"]

_MAX_URL = 2048
_MAX_REGIONS = 1000
_REGION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HINT = 'e.g. default = "https://hooks.example.net/oncall" and [regions] eu-west = "https://..."'


@dataclass(frozen=True, slots=True)
class Routes:
    default: str | None = None
    regions: dict[str, str] = field(default_factory=dict)

    def urls_for(self, regions: tuple[str, ...]) -> list[str]:
        """The webhook URLs an incident in ``regions`` goes to, each once, in order."""
        out: list[str] = []
        for region in regions or ("",):
            url = self.regions.get(region, self.default)
            if url is not None and url not in out:
                out.append(url)
        return out


def _url(value: object, path: str, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError("must be a URL string", path=path, key=key, hint=_HINT)
    parts = urlsplit(value)
    if len(value) > _MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{value[:80]!r} is not an http(s) URL with a host", path=path, key=key, hint=_HINT
        )
    return value


def parse_routes(text: str, *, path: str = "<routes>") -> Routes:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", path=path, hint="fix the syntax") from None
    unknown = sorted(set(data) - {"default", "regions"})
    if unknown:
        raise ConfigError(
            "unknown key (only default and [regions])", path=path, key=unknown[0], hint=_HINT
        )
    default = _url(data["default"], path, "default") if "default" in data else None
    table = data.get("regions", {})
    if not isinstance(table, dict):
        raise ConfigError("must be a table of region = URL", path=path, key="regions", hint=_HINT)
    if len(table) > _MAX_REGIONS:
        raise ConfigError(f"more than {_MAX_REGIONS} regions", path=path, key="regions")
    regions = {}
    for region, url in table.items():
        if not _REGION.match(region):
            raise ConfigError(
                "is not a region name", path=path, key=f"regions.{region}", hint=_HINT
            )
        regions[region] = _url(url, path, f"regions.{region}")
    if default is None and not regions:
        raise ConfigError("no routes: give default or [regions]", path=path, hint=_HINT)
    return Routes(default=default, regions=regions)


def load_routes(path: Path) -> Routes:
    """The routes file at ``path``; a :class:`ConfigError` names the file and key if it is bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "file not found", path=str(path), hint="check --incident-routes"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read: {err}", path=str(path)) from None
    return parse_routes(text, path=str(path))
