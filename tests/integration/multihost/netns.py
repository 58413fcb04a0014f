"""Test helper: "hosts" as Linux network namespaces on one bridge, created and removed by the test.

:class:`Network` makes a switch namespace holding a bridge, and for each host a namespace whose
``eth0`` is one end of a veth pair, the other end a port of the bridge. Addresses live only on
those ``eth0``s (one private /24), so nothing touches the machine's own interfaces or routes, and
no namespace forwards IP (they share one L2 segment). ``cut(host)`` / ``heal(host)`` set the
host's bridge port down / up: a partition by link-down.

Processes start in a host with :meth:`Network.prefix` (``nsenter --net=...``, which switches only
the network namespace and execs, so the pid is the program's). The test process reaches a host
through :meth:`Network.run_in`: a thread that has entered the namespace (``setns`` applies to the
calling thread only), so the test itself never leaves the host's namespace.

:meth:`Network.close` SIGKILLs, by pid, every process still inside each namespace and deletes the
namespaces (which removes their veths and the bridge). It runs whatever failed before it; a
test killed outright leaves its namespaces to :func:`sweep_stale` of the next run (namespace
names carry the creating process's pid).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from typing import TypeVar

_CLONE_NEWNET = 0x40000000
_T = TypeVar("_T")


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"efnprobe{os.getpid()}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if res.returncode != 0:
        return f"`ip netns add` failed: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def sweep_stale(prefix: str = "efn") -> None:
    """Remove namespaces ``<prefix><pid>-*`` whose creating test process is gone.

    A test killed outright (its per-test timeout, SIGKILL) cannot run :meth:`Network.close`;
    the next run cleans up after it, killing (by pid) what is left inside.
    """
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        tag, sep, _ = name.partition("-")
        pid = tag[len(prefix) :]
        if not sep or not tag.startswith(prefix) or not pid.isdigit():
            continue
        if os.path.exists(f"/proc/{pid}"):
            continue
        for left in _netns_pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(left, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def _netns_pids(name: str) -> list[int]:
    res = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10)
    return [int(p) for p in res.stdout.split()]


class Network:
    """Namespaced hosts on one bridge; see the module docstring."""

    def __init__(self, tag: str, subnet: str = "10.77.0") -> None:
        self.tag = tag
        self.subnet = subnet
        self.switch = f"{tag}-sw"
        self.hosts: dict[str, str] = {}  # host -> its address
        self._ports: dict[str, str] = {}  # host -> its bridge port (in the switch namespace)
        self._made: list[str] = []
        self._pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def add_host(self, host: str, last_octet: int) -> str:
        """A namespace ``host`` at ``<subnet>.<last_octet>``; returns the address."""
        ns, port, addr = self.ns(host), f"p{len(self._ports)}", f"{self.subnet}.{last_octet}"
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0")
        _ip("-n", self.switch, "link", "set", "eth0", "netns", ns)
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        self.hosts[host], self._ports[host] = addr, port
        return addr

    def cut(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", self._ports[host], "down")

    def heal(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", self._ports[host], "up")

    def prefix(self, host: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.ns(host)}", "--"]

    def run_in(self, host: str, fn: Callable[[], _T]) -> _T:
        """Call ``fn`` in a thread inside ``host``'s network namespace."""
        pool = self._pools.get(host)
        if pool is None:
            pool = concurrent.futures.ThreadPoolExecutor(
                1, initializer=enter_netns, initargs=(self.ns(host),)
            )
            self._pools[host] = pool
        return pool.submit(fn).result(timeout=120)

    def pids(self, host_ns: str) -> list[int]:
        return _netns_pids(host_ns)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        for ns in reversed(self._made):
            for pid in self.pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self._made.clear()
