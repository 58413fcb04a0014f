"""Servers under test for ``edgefn bench runtime``, each in its own process.

``--mode bare``: a hello-world ASGI app on the same uvicorn/httptools/uvloop server the node uses.
``--mode bare-granian``: the same app on granian (a Rust HTTP server; ASGI, one worker process), the
fastest Python server the field benchmarks. ``--mode node`` / ``node-relaxed``: a full edge node
serving a hello-world function through the sandbox, with strict or relaxed isolation.
Prints ``READY <port>`` on stdout once it accepts requests; exits on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from edgefn._loop import run


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello, world!"})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def _main(mode: str, function_dir: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if mode == "bare":
        server = _Server(
            uvicorn.Config(
                bare_app,
                host="127.0.0.1",
                port=0,
                log_level="warning",
                access_log=False,
                lifespan="off",
                http="httptools",
                loop="none",
            )
        )
        task = asyncio.get_running_loop().create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        print(f"READY {server.servers[0].sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()
        server.should_exit = True
        await task
        return
    # lazy: the bare-uvicorn baseline process must not load the node it is compared with
    from edgefn.edge import EdgeNode
    from edgefn.observe import JsonLog

    node = EdgeNode(
        "bench",
        log=JsonLog(io.StringIO()),
        access_log=False,
        isolation="relaxed" if mode == "node-relaxed" else "strict",
        sandbox_host_layers=mode != "node-relaxed",
    )
    await node.start()
    await node.deploy_dir(Path(function_dir))
    print(f"READY {node.port}", flush=True)
    await stop.wait()
    await node.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _announce_when_listening(port: int, timeout_s: float = 30) -> None:
    """Print READY once ``port`` accepts connections (granian binds it in its own time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.02)
            continue
        print(f"READY {port}", flush=True)
        return
    print(f"FAILED granian did not listen on {port} within {timeout_s:.0f} s", flush=True)


def _granian() -> None:
    # lazy: granian is a dev extra; the other modes must run without it
    from granian import Granian
    from granian.constants import Interfaces

    port = _free_port()
    threading.Thread(target=_announce_when_listening, args=(port,), daemon=True).start()
    # One worker, the event loop granian picks (uvloop when installed), no websockets: the
    # configuration the side-by-side table measured. Granian handles SIGTERM itself.
    Granian(
        "edgefn.bench._serve:bare_app",
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        workers=1,
        websockets=False,
        log_enabled=False,
    ).serve()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--mode", choices=["bare", "bare-granian", "node", "node-relaxed"], required=True
    )
    ap.add_argument("--function-dir", default="")
    a = ap.parse_args()
    if a.mode == "bare-granian":
        _granian()
    else:
        run(_main(a.mode, a.function_dir))
    sys.exit(0)


if __name__ == "__main__":
    main()
