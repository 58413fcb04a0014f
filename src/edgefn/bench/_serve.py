"""Servers under test for ``edgefn bench runtime``, each in its own process.

``--mode bare``: a hello-world ASGI app on the same uvicorn/httptools server the node uses (the
ceiling). ``--mode node``: a full edge node serving a hello-world function through the sandbox.
Prints ``READY <port>`` on stdout once it accepts requests; exits on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import signal
import sys
from pathlib import Path
from typing import Any

import uvicorn

from edgefn._loop import run


async def _bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
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
                _bare,
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["bare", "node", "node-relaxed"], required=True)
    ap.add_argument("--function-dir", default="")
    a = ap.parse_args()
    run(_main(a.mode, a.function_dir))
    sys.exit(0)


if __name__ == "__main__":
    main()
