"""Egress host matching (pure) and the seccomp filter in a real forked child."""

from __future__ import annotations

import os
import socket

import pytest

from edgefn.edge.outbound import host_allowed
from edgefn.runtime import _seccomp


@pytest.mark.parametrize(
    ("allow", "url", "ok"),
    [
        (None, "http://anything.example/", True),
        ((), "http://a.example/", False),
        (("api.example.com",), "https://api.example.com/x", True),
        (("api.example.com",), "https://evil.com/api.example.com", False),
        (("*.example.com",), "http://a.b.example.com/", True),
        (("*.example.com",), "http://example.com/", False),
        (("127.0.0.1:8080",), "http://127.0.0.1:8080/", True),
        (("127.0.0.1:8080",), "http://127.0.0.1:9090/", False),
        (("api.example.com:443",), "https://api.example.com/", True),
    ],
)
def test_host_allowed(allow: tuple[str, ...] | None, url: str, ok: bool) -> None:
    assert host_allowed(allow, url) is ok


def test_filter_program_is_whole_instructions() -> None:
    assert len(_seccomp.build_filter(123)) % 8 == 0


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter targets x86_64")
def test_sandboxed_child_cannot_fork_or_open_inet_sockets() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: install the filter, try forbidden things, report
        os.close(r)
        results = [_seccomp.install() == "on"]
        try:
            os.fork()
            results.append(False)
        except OSError:
            results.append(True)
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            results.append(False)
        except OSError:
            results.append(True)
        pair = socket.socketpair()
        pair[0].close()
        pair[1].close()
        results.append(True)
        os.write(w, bytes(int(x) for x in results))
        os._exit(0)
    os.close(w)
    data = os.read(r, 16)
    os.close(r)
    os.waitpid(pid, 0)
    assert list(data) == [1, 1, 1, 1]
