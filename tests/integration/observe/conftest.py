"""One planet for every observability test: starting a planet is most of each test's time, and
stats, tail and the rest read the same kind of traffic. Each module deploys its own function on
it; a test that partitions or kills a location heals or revives it before it ends.

The planet's core exports kept traces by OTLP/HTTP to ``otlp_receiver``: a real HTTP server on
127.0.0.1 that decodes each protobuf ``ExportTraceServiceRequest`` (tests/.../test_traces.py
checks what it got)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.planet_helpers import Planet, PlanetSpec, start_planet

# Four locations in several regions, with the world model's RTTs on every link.
# Smart placement re-plans every 2 s (test_smart_placement.py).
OBSERVED = PlanetSpec(locations=4, emulate_rtt=True, extra_args=("--replan-interval-s", "2"))


class OtlpReceiver:
    """Spans received, by span id (hex): name, trace id, parent id, attributes, resource.
    ``status``: what it answers (a refusing collector when not 200; nothing is kept then)."""

    def __init__(self, *, port: int = 0, status: int = 200) -> None:
        self.spans: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver._lock:
                    receiver.requests += 1
                if status == 200:
                    receiver._take(self.path, self.headers.get("content-type", ""), request)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _take(self, path: str, content_type: str, request: ExportTraceServiceRequest) -> None:
        assert path == "/v1/traces", path
        assert content_type == "application/x-protobuf", content_type
        with self._lock:
            for rs in request.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans[s.span_id.hex()] = {
                            "name": s.name,
                            "trace_id": s.trace_id.hex(),
                            "parent_id": s.parent_span_id.hex(),
                            "attributes": {a.key: a.value for a in s.attributes},
                            "resource": resource,
                        }

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="package")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="package")
def observed_planet(
    tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver
) -> Iterator[Planet]:
    spec = dataclasses.replace(
        OBSERVED, extra_args=(*OBSERVED.extra_args, "--otlp-endpoint", otlp_receiver.url)
    )
    with start_planet(tmp_path_factory.mktemp("observe"), spec) as planet:
        yield planet
