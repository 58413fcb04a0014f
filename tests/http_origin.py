"""A real HTTP origin on 127.0.0.1 for edge-cache tests: counts the requests per path and keeps
the ``x-origin-key`` header each one carried; ``headers_for(path)`` gives each response's caching
headers. ``examples_for(tmp, origin, name)`` copies an example pointed at it (its port in place of
the examples' 8790)."""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
Headers = list[tuple[str, str]]


class CountingOrigin:
    def __init__(self, headers_for: Callable[[str], Headers]) -> None:
        self.hits: Counter[str] = Counter()
        self.keys: list[str] = []
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with origin.lock:
                    origin.hits[self.path] += 1
                    n = origin.hits[self.path]
                    origin.keys.append(self.headers.get("x-origin-key", ""))
                body = f"{self.path} #{n}".encode()
                self.send_response(200)
                for name, value in headers_for(self.path):
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                """Quiet: tests read the counts, not a request log."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def example_for(directory: Path, origin: CountingOrigin, name: str) -> Path:
    """``examples/<name>`` copied into ``directory`` with its origin URL pointed at ``origin``."""
    d = directory / name
    shutil.copytree(REPO / "examples" / name, d)
    toml = (d / "edgefn.toml").read_text().replace("8790", str(origin.port))
    (d / "edgefn.toml").write_text(toml)
    return d
