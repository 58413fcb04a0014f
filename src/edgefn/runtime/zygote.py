"""The zygote: a process that pre-imports the runtime and common modules, then forks workers.

Started by the node as ``python -m edgefn.runtime.zygote --fd N [--preload mod,...]`` with one end of
a Unix socketpair. It imports the SDK, the worker module and the preload list, freezes the heap
(``gc.freeze`` so the forked children do not dirty shared pages when the collector runs), then waits
for ``Spawn(count)``. For each worker it creates a socketpair, forks, and passes the node's end to the
node with SCM_RIGHTS together with ``Spawned(pid)``. The child closes the zygote's sockets and runs
:func:`edgefn.runtime.worker.run_worker`. SIGCHLD is ignored so the kernel reaps exited workers.
The zygote exits when the node closes the control socket, and dies with the node (PDEATHSIG).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import socket
import sys

import edgefn.sdk  # noqa: F401  (pre-import: the point of the zygote)
from edgefn.runtime import _seccomp, protocol, worker

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


def _fork_worker(ctl: socket.socket, *, sandbox: bool) -> None:
    node_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            node_end.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            worker.run_worker(child_end, sandbox=sandbox)
        finally:
            os._exit(0)
    child_end.close()
    socket.send_fds(ctl, [protocol.encode(protocol.Spawned(pid))], [node_end.fileno()])
    node_end.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="edgefn-zygote")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--preload", default="")
    parser.add_argument("--no-sandbox", action="store_true")
    args = parser.parse_args(argv)
    _seccomp.set_parent_death_signal(signal.SIGKILL)
    for name in (*BASE_PRELOAD, *filter(None, args.preload.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as err:
            sys.stderr.write(f"edgefn zygote: cannot preload {name!r}: {err}\n")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    gc.collect()
    gc.freeze()
    ctl = socket.socket(fileno=args.fd)
    while True:
        msg = _read_frame(ctl)
        if msg is None:
            return
        if isinstance(msg, protocol.Spawn):
            for _ in range(max(0, min(msg.count, 64))):
                _fork_worker(ctl, sandbox=not args.no_sandbox)


if __name__ == "__main__":
    main()
