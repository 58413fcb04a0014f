"""The zygote: a process that pre-imports the runtime and common modules, then forks workers.

Started by the node as ``python -I -m edgefn.runtime.zygote --fd N [--preload mod,...]
[--versions-dir D] [--cgroup edgefn/<node-id>]`` with one end of a Unix socketpair, an environment
built from nothing and stdout/stderr not shared with the node. It imports the SDK, the worker module
and the preload list, runs one probe worker through the whole isolation set-up and reports each
layer's status (``Hello``), freezes the heap (``gc.freeze`` so the forked children do not dirty
shared pages when the collector runs), then waits for ``Spawn(count)``.

For each worker it creates the worker's cgroup and a socketpair, then forks twice (see
:func:`_fork_worker`: a pid namespace applies only to the children of the process that creates it),
and passes the node's end to the node with SCM_RIGHTS together with ``Spawned(host_pid, cgroup)``.
The worker runs :func:`edgefn.runtime.worker.run_worker`. The zygote is a child subreaper and ignores
SIGCHLD, so the kernel reaps exited workers and intermediates. It holds no tenant data: Load frames go
to workers only. It exits when the node closes the control socket, and dies with the node
(PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import json
import os
import signal
import socket
import sys

import edgefn.sdk  # noqa: F401  (pre-import: the point of the zygote)
from edgefn.runtime import _cgroup, _isolation, _seccomp, protocol, worker

BASE_PRELOAD = (
    "asyncio",
    "edgefn._loop",
    "json",
    "logging",
    "msgspec",
    "traceback",
    "urllib.parse",
    "uvloop",
)


def _read_frame(sock: socket.socket) -> protocol.Message | None:
    header = _recv_exact(sock, 4)
    if header is None:
        return None
    payload = _recv_exact(sock, protocol.decode_length(header))
    return None if payload is None else protocol.decode(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _fork_worker(ctl: socket.socket, plan: worker.Plan, serial: int) -> None:
    """Double fork: the intermediate child joins the worker's cgroup and unshares the namespaces,
    then forks the worker (pid 1 in its pid namespace), reports its host pid and exits."""
    group = f"{plan.cgroup_parent}/w{serial}" if plan.cgroup_parent else ""
    if group:
        try:
            _cgroup.create_worker(group)
        except OSError:
            group = ""
    node_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            node_end.close()
            os.close(r)
            _intermediate(child_end, w, plan, group)
        finally:
            os._exit(0)
    child_end.close()
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reported = f.read()
    host_pid = int(reported) if reported.strip() else 0
    if host_pid <= 0:
        node_end.close()
        return
    msg = protocol.Spawned(host_pid, group)
    socket.send_fds(ctl, [protocol.encode(msg)], [node_end.fileno()])
    node_end.close()


def _intermediate(child_end: socket.socket, report_fd: int, plan: worker.Plan, group: str) -> None:
    layers = _isolation.Layers()
    if group:
        try:
            _cgroup.join(group, os.getpid())
            layers.set("cgroup", "on")
        except OSError as err:
            layers.set("cgroup", f"off: {err}")
    else:
        layers.set("cgroup", "off: no cgroup (v1 memory/pids/cpuacct) available to the node")
    if plan.isolate:
        _isolation.enter_namespaces(layers)
    wpid = os.fork()
    if wpid == 0:
        os.close(report_fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        worker.run_worker(child_end, plan, layers)
        os._exit(0)
    os.write(report_fd, str(wpid).encode())


def _probe(plan: worker.Plan) -> dict[str, str]:
    """Run the whole isolation set-up in a throw-away worker and collect each layer's status."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            layers = _isolation.Layers()
            layers.set("cgroup", _cgroup.available() if plan.cgroup_parent else "off: disabled")
            if plan.isolate:
                _isolation.enter_namespaces(layers)
            inner = os.fork()
            if inner == 0:
                worker.probe_worker(w, plan, layers)
                os._exit(0)
            os.waitpid(inner, 0)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        return {"seccomp": "off: the probe worker died during set-up"}
    return dict(json.loads(data))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="edgefn-zygote")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--preload", default="")
    parser.add_argument("--versions-dir", default="")
    parser.add_argument("--cgroup", default="")
    parser.add_argument("--no-namespaces", action="store_true")
    args = parser.parse_args(argv)
    _seccomp.set_parent_death_signal(signal.SIGKILL)
    # A terminal's Ctrl-C reaches the whole process group; the node stops the zygote itself
    # (closing its control socket), so it must not die mid-read with a traceback before that.
    # Its workers inherit this and are stopped by the node in the same way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Neither the node nor the zygote may be traced or have its memory read through /proc by a
    # worker that somehow shares its uid; orphaned workers are re-parented here and reaped.
    _seccomp.set_not_dumpable()
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    # Before any event loop exists: no io_uring for libuv here or in the workers (see _seccomp).
    _seccomp.install(_seccomp.build_io_uring_block())
    for name in (*BASE_PRELOAD, *filter(None, args.preload.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as err:
            sys.stderr.write(f"edgefn zygote: cannot preload {name!r}: {err}\n")
    plan = worker.Plan(
        versions_dir=args.versions_dir,
        cgroup_parent=args.cgroup,
        isolate=not args.no_namespaces,
        roots=tuple(_isolation.python_roots()),
    )
    ctl = socket.socket(fileno=args.fd)
    ctl.sendall(protocol.encode(protocol.Hello(_probe(plan))))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    gc.collect()
    gc.freeze()
    serial = 0
    while True:
        msg = _read_frame(ctl)
        if msg is None:
            return
        if isinstance(msg, protocol.Spawn):
            for _ in range(max(0, min(msg.count, 64))):
                serial += 1
                _fork_worker(ctl, plan, serial)


if __name__ == "__main__":
    main()
