"""The pure SSRF policy (edgefn.edge._egress_policy): address classes, URL parsing, rules."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefn.edge._egress_policy import (
    EgressRules,
    Refusal,
    Target,
    address_class,
    check_addresses,
    check_name,
    parse_deny,
    parse_target,
    precheck,
)

IP = ipaddress.ip_address
DOCUMENTATION = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.31.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "unique local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback, written as IPv6"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("::127.0.0.1", "IPv4-compatible"),
    ],
)
def test_internal_addresses_are_classified(address: str, needle: str) -> None:
    why = address_class(IP(address))
    assert why is not None
    assert needle in why


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_class(IP(address)) is None


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_form_is_classified_like_the_ipv4_address(ip: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    assert (address_class(ip) is None) == (address_class(mapped) is None)


@given(st.ip_addresses())
def test_every_non_global_address_is_refused_except_documentation_ranges(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    """Cross-check against the standard library: what it calls non-global we refuse, except the
    documentation ranges (unrouted, used by tests as public stand-ins)."""
    documentation = any(ip in n for n in DOCUMENTATION if ip.version == n.version) or (
        ip.version == 6 and ip in ipaddress.ip_network("2001:db8::/32")
    )
    internal = ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
    if internal and not documentation:
        assert address_class(ip) is not None
    if ip.version == 4 and ip in ipaddress.ip_network("100.64.0.0/10"):
        assert address_class(ip) is not None


@given(st.ip_addresses(network="127.0.0.0/8") | st.ip_addresses(network="10.0.0.0/8"))
def test_private_addresses_need_allow_private_and_the_entry_opens_them(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    target = Target(f"http://{ip}:9000/", "http", str(ip), 9000)
    refused = check_addresses(EgressRules(), target, [ip])
    assert isinstance(refused, Refusal)
    assert "allow_private" in refused.message
    assert check_addresses(EgressRules(allow_private=(f"{ip}:9000",)), target, [ip]) is None
    assert check_addresses(EgressRules(allow_private=(str(ip),)), target, [ip]) is None
    assert isinstance(
        check_addresses(EgressRules(allow_private=(f"{ip}:9001",)), target, [ip]), Refusal
    )


def test_one_refused_address_among_public_ones_refuses_the_name() -> None:
    target = Target("http://mixed.example/", "http", "mixed.example", 80)
    refusal = check_addresses(EgressRules(), target, [IP("8.8.8.8"), IP("127.0.0.1")])
    assert refusal is not None
    assert "mixed.example (resolved to 127.0.0.1)" in refusal.message
    assert "loopback" in refusal.message


def test_name_entry_in_allow_private_opens_what_the_name_resolves_to() -> None:
    target = Target("http://localhost:8080/", "http", "localhost", 8080)
    rules = EgressRules(allow_private=("localhost:8080",))
    assert check_addresses(rules, target, [IP("127.0.0.1"), IP("::1")]) is None


def test_deny_addresses_win_over_allow_private() -> None:
    target = Target("http://127.0.0.1:4222/", "http", "127.0.0.1", 4222)
    rules = EgressRules(
        allow_private=("127.0.0.1",), deny=parse_deny([("127.0.0.1", 4222), "10.0.0.1"])
    )
    refusal = check_addresses(rules, target, [IP("127.0.0.1")])
    assert refusal is not None
    assert "platform itself" in refusal.message
    other_port = Target("http://127.0.0.1:4223/", "http", "127.0.0.1", 4223)
    assert check_addresses(rules, other_port, [IP("127.0.0.1")]) is None
    mapped = Target("http://[::ffff:10.0.0.1]/", "http", "::ffff:10.0.0.1", 80)
    assert check_addresses(
        EgressRules(allow_private=("[::ffff:10.0.0.1]",), deny=rules.deny),
        mapped,
        [IP("::ffff:10.0.0.1")],
    ) == Refusal(
        "::ffff:10.0.0.1:80 is an address of the platform itself; it is refused whatever "
        "[egress] says"
    )


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://example.com/", "only http:// and https://"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("gopher://127.0.0.1:6379/", "only http:// and https://"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http:///nohost", "no host"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://example.com:0/", "port 0"),
        ("http://[::1/", "not a valid URL"),
        ("http://ex$ample.com/", "not a valid hostname"),
        ("notaurl", "only http"),
    ],
)
def test_bad_urls_are_refused_before_any_lookup(url: str, needle: str) -> None:
    result = parse_target(url)
    assert isinstance(result, Refusal)
    assert needle in result.message
    assert "pw" not in result.message


def test_parse_target_fills_default_ports_and_lowercases() -> None:
    assert parse_target("HTTPS://API.Example.COM/x") == Target(
        "HTTPS://API.Example.COM/x", "https", "api.example.com", 443
    )
    assert parse_target("http://[::1]:81/") == Target("http://[::1]:81/", "http", "::1", 81)


def test_allow_list_names_and_allow_private_entries_count_as_allowed() -> None:
    rules = EgressRules(allow=("*.example.com", "api.test:443"), allow_private=("localhost:8080",))
    ok = ["http://a.example.com/", "https://api.test/", "http://localhost:8080/"]
    for url in ok:
        target = parse_target(url)
        assert isinstance(target, Target)
        assert check_name(rules, target) is None, url
    for url in ["http://example.com/", "http://api.test/", "http://localhost:8081/"]:
        target = parse_target(url)
        assert isinstance(target, Target)
        assert check_name(rules, target) is not None, url


@given(st.text(max_size=60))
def test_precheck_never_raises(url: str) -> None:
    result = precheck(EgressRules(allow=("a.test",), allow_private=("[::1]:80",)), url)
    assert result is None or result.message


def test_precheck_refuses_literal_metadata_address() -> None:
    refusal = precheck(EgressRules(), "http://169.254.169.254/latest/meta-data/")
    assert refusal is not None
    assert "169.254.169.254" in refusal.message
    assert "cloud metadata" in refusal.message
