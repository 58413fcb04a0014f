"""Which outbound subrequests may leave the node: the pure SSRF policy behind ``edgefn.fetch``.

How it works. A subrequest is checked in three steps, each a pure function that returns a
``Refusal`` (what was refused and why, ready for the function's ``EgressDeniedError``) or ``None``:

1. ``parse_target(url)``: only absolute ``http``/``https`` URLs with a host, no credentials
   (``user:pass@``), a valid port. Anything else is refused at once, before any lookup.
2. ``check_name(rules, target)``: when ``[egress] allow`` is given, the host (and port) must match
   it or an ``[egress] allow_private`` entry.
3. ``check_addresses(rules, target, addresses)``: run on *every* address the host resolved to (one
   refused address refuses the request, so a name cannot hide 127.0.0.1 among public addresses).
   The planet's own addresses (``deny``) are always refused. Non-public addresses (loopback,
   RFC 1918, CGNAT, link-local including cloud metadata, ULA, multicast, unspecified, reserved,
   broadcast, and IPv6 forms embedding one of those: IPv4-mapped, NAT64, 6to4) are refused unless
   an ``allow_private`` entry names the host or the address (and port, when the entry has one).

The driver (``edgefn.edge.outbound``) resolves the name once, calls step 3 on the result and then
connects to the checked address itself, so a second DNS answer can never be used (no rebinding).

Documentation ranges (TEST-NET-1/2/3, ``2001:db8::/32``) are deliberately *not* refused: they are
not routed anywhere, so they cannot reach anything internal, and tests use them as stand-ins for
public addresses they never connect to.

This module is pure: no sockets, no DNS, no clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final
from urllib.parse import SplitResult, urlsplit

from edgefn.bundle._hostport import HOSTNAME_RE, split_host_port

__all__ = [
    "EgressRules",
    "Refusal",
    "Target",
    "address_class",
    "check_addresses",
    "check_name",
    "matches_allow",
    "parse_deny",
    "parse_target",
    "precheck",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPV6 = ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Order matters only for the message: the first match names the class.
_REFUSED_V4: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = (
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("0.0.0.0/8"), "unspecified ('this network'; 0.0.0.0 reaches the node itself)"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT shared space (RFC 6598)"),
    (_V4("169.254.169.254/32"), "link-local (the cloud metadata service)"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("192.0.0.0/24"), "reserved (IETF protocol assignments)"),
    (_V4("192.88.99.0/24"), "reserved (6to4 relay anycast)"),
    (_V4("198.18.0.0/15"), "reserved (benchmarking)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)

_REFUSED_V6: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = (
    (_V6("::1/128"), "loopback"),
    (_V6("::/128"), "unspecified"),
    (_V6("::/96"), "reserved (IPv4-compatible IPv6)"),
    (_V6("64:ff9b:1::/48"), "private (local-use NAT64)"),
    (_V6("100::/64"), "reserved (discard prefix)"),
    (_V6("2001::/23"), "reserved (IETF protocol assignments, incl. Teredo)"),
    (_V6("fc00::/7"), "private (unique local address)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "private (deprecated site-local)"),
    (_V6("ff00::/8"), "multicast"),
)

_NAT64: Final = _V6("64:ff9b::/96")
_SIX_TO_FOUR: Final = _V6("2002::/16")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a subrequest may not be made; ``message`` is shown to the function as is."""

    message: str


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed subrequest URL: lower-case ``host`` (IPv6 without brackets), explicit ``port``."""

    url: str
    scheme: str
    host: str
    port: int

    @property
    def literal(self) -> IPAddress | None:
        """The host as an IP address when the URL names one directly, else ``None``."""
        return _ip_or_none(self.host)


@dataclass(frozen=True, slots=True)
class EgressRules:
    """A function's egress rules plus the node's own denied addresses.

    ``allow``: ``[egress] allow`` (``None`` = any public host). ``allow_private``: ``[egress]
    allow_private`` entries (``host``, ``ip``, ``[ipv6]``, each with an optional ``:port``).
    ``deny``: (address, port or ``None`` for every port) pairs that are always refused.
    """

    allow: tuple[str, ...] | None = None
    allow_private: tuple[str, ...] = ()
    deny: frozenset[tuple[IPAddress, int | None]] = frozenset()


def _ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), else ``ip`` itself."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return ip


def address_class(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (e.g. ``"loopback"``), or ``None`` when it is public.

    IPv6 forms that embed an IPv4 address are classified by the embedded address and say so.
    """
    inner = _unwrap(ip)
    if isinstance(inner, ipaddress.IPv4Address):
        for net4, why in _REFUSED_V4:
            if inner in net4:
                return why if inner is ip else f"{why}, written as IPv6 {ip}"
        return None
    for net6, why in _REFUSED_V6:
        if inner in net6:
            return why
    return None


def parse_deny(entries: Iterable[str | tuple[str, int]]) -> frozenset[tuple[IPAddress, int | None]]:
    """Normalise ``Outbound(deny_addresses=...)``: ip strings (every port) or (ip, port) pairs."""
    out: set[tuple[IPAddress, int | None]] = set()
    for entry in entries:
        text, port = (entry, None) if isinstance(entry, str) else entry
        out.add((_unwrap(ipaddress.ip_address(text)), port))
    return frozenset(out)


def parse_target(url: str) -> Target | Refusal:
    """Parse a subrequest URL, refusing anything but a plain absolute http(s) URL."""
    if not isinstance(url, str) or len(url) > 8192:
        return Refusal("the URL is not a string of at most 8192 characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return Refusal(f"{url!r} contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        return Refusal(f"{url!r} is not a valid URL ({err})")
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        return Refusal(f"{url!r}: only http:// and https:// URLs can be fetched")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return Refusal(
            f"{_redact(parts)}: URLs with credentials (user:password@) are refused; "
            "send an Authorization header instead"
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return Refusal(f"{url!r} has no host")
    if _ip_or_none(host) is None and not HOSTNAME_RE.match(host):
        return Refusal(f"{url!r}: {host!r} is not a valid hostname")
    if port == 0:
        return Refusal(f"{url!r}: port 0 is not a valid destination")
    return Target(url, scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])


def _redact(parts: SplitResult) -> str:
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://***@{netloc}"


def _entry_matches(entry: str, names: Sequence[str], port: int, *, wildcard: bool) -> bool:
    star = "*." if wildcard and entry.startswith("*.") else ""
    try:
        pattern, want_port = split_host_port(entry[len(star) :])
    except ValueError:
        return False
    pattern = star + pattern
    if want_port is not None and want_port != port:
        return False
    for name in names:
        if name == pattern or (
            wildcard and pattern.startswith("*.") and fnmatchcase(name, pattern)
        ):
            return True
    return False


def matches_allow(allow: Sequence[str], host: str, port: int) -> bool:
    """Whether ``host:port`` matches an ``[egress] allow`` entry (exact, ``*.suffix``, ``:port``)."""
    return any(_entry_matches(e, [host], port, wildcard=True) for e in allow)


def _private_allowed(rules: EgressRules, target: Target, ip: IPAddress) -> bool:
    names = [target.host, str(ip), str(_unwrap(ip))]
    return any(_entry_matches(e, names, target.port, wildcard=False) for e in rules.allow_private)


def check_name(rules: EgressRules, target: Target) -> Refusal | None:
    """Step 2: the host against ``[egress] allow`` (``allow_private`` entries count as allowed)."""
    if rules.allow is None or matches_allow(rules.allow, target.host, target.port):
        return None
    if any(
        _entry_matches(e, [target.host], target.port, wildcard=False) for e in rules.allow_private
    ):
        return None
    return Refusal(
        f"{target.host}:{target.port} is not in [egress] allow = {list(rules.allow)}; "
        "add it there to fetch it"
    )


def check_addresses(
    rules: EgressRules, target: Target, addresses: Sequence[IPAddress]
) -> Refusal | None:
    """Step 3: every resolved address must be allowed; the first refused one is reported."""
    if not addresses:
        return Refusal(f"{target.host} resolved to no addresses")
    for ip in addresses:
        refusal = _check_address(rules, target, ip)
        if refusal is not None:
            return refusal
    return None


def _check_address(rules: EgressRules, target: Target, ip: IPAddress) -> Refusal | None:
    where = target.host if target.literal is not None else f"{target.host} (resolved to {ip})"
    inner = _unwrap(ip)
    if (inner, None) in rules.deny or (inner, target.port) in rules.deny:
        return Refusal(
            f"{where}:{target.port} is an address of the platform itself; "
            "it is refused whatever [egress] says"
        )
    why = address_class(ip)
    if why is None or _private_allowed(rules, target, ip):
        return None
    return Refusal(
        f"{where}: {ip} is {why}; add {_suggest(target, ip)!r} to [egress] allow_private "
        "for local development"
    )


def _suggest(target: Target, ip: IPAddress) -> str:
    host = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
    return f"{host}:{target.port}"


def precheck(rules: EgressRules, url: str) -> Refusal | None:
    """Every check that needs no DNS: steps 1 and 2, and step 3 when the URL names an IP."""
    target = parse_target(url)
    if isinstance(target, Refusal):
        return target
    refusal = check_name(rules, target)
    if refusal is not None or target.literal is None:
        return refusal
    return check_addresses(rules, target, [target.literal])
