"""A small closed-loop HTTP/1.1 load generator (keep-alive, fixed concurrency).

Runs in its own process (``python -m edgefn.bench._http_load``) so that the client does not share an
event loop or a core's time slice with the server under test more than the machine forces. It speaks
raw HTTP/1.1 over asyncio streams: far cheaper per request than a full client library, so the server,
not the generator, is what gets measured. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


async def _conn(
    host: str, port: int, request: bytes, stop_at: float, lat: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            chunked = False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                lname = name.strip().lower()
                if lname == b"content-length":
                    length = int(value.strip())
                elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors.append(1)
    finally:
        writer.close()


async def run(
    url_host: str,
    port: int,
    host_header: str,
    path: str,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
) -> dict[str, float]:
    request = f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode()
    warm: list[float] = []
    await asyncio.gather(
        *[
            _conn(url_host, port, request, time.perf_counter() + warmup_s, warm, [])
            for _ in range(concurrency)
        ]
    )
    lat: list[float] = []
    errors: list[int] = []
    t0 = time.perf_counter()
    await asyncio.gather(
        *[_conn(url_host, port, request, t0 + duration_s, lat, errors) for _ in range(concurrency)]
    )
    elapsed = time.perf_counter() - t0
    lat.sort()

    def q(x: float) -> float:
        return round(lat[min(len(lat) - 1, int(x * len(lat)))] * 1000, 3) if lat else 0.0

    return {
        "requests": len(lat),
        "errors": len(errors),
        "rps": round(len(lat) / elapsed, 1),
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host-header", default="localhost")
    ap.add_argument("--path", default="/")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    a = ap.parse_args()
    res = asyncio.run(
        run("127.0.0.1", a.port, a.host_header, a.path, a.concurrency, a.duration, a.warmup)
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
