"""``host[:port]`` entries of ``[egress]`` (shared by the manifest and the egress policy).

Pure: string parsing only.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = ["HOSTNAME_RE", "split_host_port"]

# RFC 1123 labels (underscores tolerated, as real DNS has them), at most 253 characters.
HOSTNAME_RE: Final = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
    r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$"
)


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def split_host_port(entry: str) -> tuple[str, int | None]:
    """``host[:port]``, ``ip[:port]`` or ``[ipv6][:port]`` → (lower-case host, port or None).

    Raises ``ValueError`` with a readable reason on a malformed entry.
    """
    text = entry.strip().lower()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not isinstance(_ip_or_none(host), ipaddress.IPv6Address):
            raise ValueError(f"{entry!r}: bracketed hosts must be IPv6 addresses like [::1]:8080")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{entry!r}: expected ':port' after ']'")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        raise ValueError(f"{entry!r}: write IPv6 addresses in brackets, like [::1]:8080")
    else:
        host, _, port_text = text.partition(":")
        if not host or (_ip_or_none(host) is None and not HOSTNAME_RE.match(host)):
            raise ValueError(f"{entry!r}: not a hostname or IP address")
    if text.endswith(":") or (port_text and not (port_text.isascii() and port_text.isdigit())):
        raise ValueError(f"{entry!r}: the port must be a number")
    port = int(port_text) if port_text else None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{entry!r}: port {port} is out of range 1-65535")
    return host, port
