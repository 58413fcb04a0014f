"""Trace context parsing, the span wire format's checks, the node tracer's trace assembly and
the core's span store (dedupe, ownership filter, retention)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from edgefn.edge.request_tracing import TRACE_ID_HEADER, TracedSend, end_server_span, server_span
from edgefn.edge.tracing import NodeTracer, replace_trace_headers
from edgefn.edge.traffic_gate import Gate, recording
from edgefn.observe.span_store import SpanStore
from edgefn.observe.spans import (
    BadBatch,
    SpanRecord,
    TraceBatch,
    decode_batch,
    encode_batch,
    parse_traceparent,
    valid_tracestate,
)
from edgefn.observe.trace_sampling import SamplingConfig

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (f"00-{TID}-{PID}-01", (TID, PID)),
        (f"01-{TID}-{PID}-00-future", (TID, PID)),
        (f"00-{TID}-{PID}-01-extra", None),
        (f"ff-{TID}-{PID}-01", None),
        (f"00-{'0' * 32}-{PID}-01", None),
        (f"00-{TID}-{'0' * 16}-01", None),
        (f"00-{TID.upper()}-{PID}-01", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_traceparent_is_parsed_or_ignored(header: str | None, parsed: object) -> None:
    assert parse_traceparent(header) == parsed


def test_tracestate_is_kept_only_when_well_formed() -> None:
    assert valid_tracestate("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7") == (
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    )
    assert valid_tracestate("no equals sign") == ""
    assert valid_tracestate(",".join(f"k{i}=v" for i in range(33))) == ""


def _span(sid: str, *, location: str = "fra", function: str = "fn", parent: str = "") -> SpanRecord:
    return SpanRecord(TID, sid, parent, False, "GET", 1, 10, 20, 0, location, function, 0.5,
                      "sampled", {"http.response.status_code": 200})  # fmt: skip


def test_a_batch_round_trips_and_a_forged_one_is_refused() -> None:
    batch = TraceBatch("fra", "fra.e.1", [_span("1" * 16)])
    assert decode_batch(encode_batch(batch)) == batch
    with pytest.raises(BadBatch, match="names 'ams'"):
        decode_batch(encode_batch(TraceBatch("fra", "b", [_span("1" * 16, location="ams")])))
    with pytest.raises(BadBatch, match="does not decode"):
        decode_batch(
            msgspec.msgpack.encode({"location": "fra", "batch_id": "x", "spans": [["zz"]]})
        )
    bad = msgspec.structs.replace(_span("2" * 16), trace_id="not-hex")
    with pytest.raises(BadBatch):
        decode_batch(encode_batch(TraceBatch("fra", "b", [bad])))


def test_the_tracer_ships_a_kept_trace_whole_with_its_parent_links() -> None:
    """A server span with a client's traceparent, an invoke child and a KV grandchild: kept as
    an error, all three spans go out with the probability used; a late child follows."""
    tracer = NodeTracer("fra", sampling=SamplingConfig(base_probability=0.0))
    root = tracer.server("GET", f"00-{TID}-{PID}-01", "a=b", {})
    root.function = "fn"
    invoke = tracer.child(root, "edgefn.invoke")
    kv = tracer.child(invoke, "kv.get KV", 2)
    tracer.end(kv)
    tracer.end(invoke)
    root.attributes["http.response.status_code"] = 500
    tracer.end(root, error=True)
    late = tracer.child(invoke, "kv.put KV", 2)
    tracer.end(late)
    spans = {s.name: s for s in tracer.drain(100)}
    assert set(spans) == {"GET", "edgefn.invoke", "kv.get KV", "kv.put KV"}
    assert (spans["GET"].parent_id, spans["GET"].remote_parent) == (PID, True)
    assert spans["edgefn.invoke"].parent_id == spans["GET"].span_id
    assert spans["kv.get KV"].parent_id == spans["edgefn.invoke"].span_id
    assert {s.trace_id for s in spans.values()} == {TID}
    assert {(s.probability, s.reason) for s in spans.values()} == {(1.0, "error")}
    assert root.tracestate == "a=b"


def test_a_dropped_trace_ships_nothing_and_an_invalid_parent_starts_a_new_trace() -> None:
    tracer = NodeTracer("fra", sampling=SamplingConfig(base_probability=0.0))
    root = tracer.server("GET", "00-bad", None, {"http.response.status_code": 200})
    assert (len(root.trace_id), root.parent_id) == (32, "")
    assert root.trace_id != TID
    tracer.end(tracer.child(root, "edgefn.invoke"))
    tracer.end(root)
    assert tracer.drain(100) == []
    assert tracer.statistics().traces_dropped == 1


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"method": "GET", "path": "/p", "scheme": "http", "headers": list(headers)}


async def _answer(tracer: NodeTracer, scope: dict[str, object], head: list) -> tuple:
    span = server_span(tracer, scope, "fra")  # type: ignore[arg-type]
    span.function = "fn"
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    traced = TracedSend(send, span, scope, "fra")  # type: ignore[arg-type]
    await traced({"type": "http.response.start", "status": 503, "headers": head})
    await traced({"type": "http.response.body", "body": b""})
    end_server_span(tracer, span, traced)
    return span, sent


async def test_a_kept_server_span_gets_the_request_and_response_attributes_once_decided() -> None:
    """The server span's attributes are built only for a kept trace (here an error), from the
    request scope and the response head; the client gets the trace id header exactly once."""
    tracer = NodeTracer("fra", sampling=SamplingConfig(base_probability=0.0))
    head = [(b"x-edgefn-request-id", b"r1"), (b"x-edgefn-version", b"v7"), (b"x-edgefn-cold", b"1")]
    _, sent = await _answer(tracer, _scope((b"traceparent", f"00-{TID}-{PID}-01".encode())), head)
    (record,) = tracer.drain(10)
    assert record.attributes == {
        "http.request.method": "GET",
        "url.path": "/p",
        "url.scheme": "http",
        "edgefn.location": "fra",
        "http.response.status_code": 503,
        "edgefn.status_class": "5xx",
        "edgefn.cold_start": True,
        "edgefn.request_id": "r1",
        "edgefn.version": "v7",
        "edgefn.function": "fn",
    }
    headers = sent[0]["headers"]
    assert [v for k, v in headers if k == TRACE_ID_HEADER] == [TID.encode()]  # type: ignore[union-attr]
    assert (record.trace_id, record.parent_id) == (TID, PID)


async def test_a_relayed_answer_keeps_its_trace_header_and_a_dropped_span_is_never_filled() -> None:
    tracer = NodeTracer("fra", sampling=SamplingConfig(base_probability=0.0))
    relayed = ((b"x-edgefn-trace-id", b"f" * 32),)  # a tuple: the sender must not mutate it
    _, sent = await _answer(tracer, _scope(), relayed)  # type: ignore[arg-type]
    assert [v for k, v in sent[0]["headers"] if k == TRACE_ID_HEADER] == [b"f" * 32]  # type: ignore[union-attr]
    calm = NodeTracer("fra", sampling=SamplingConfig(base_probability=0.0))
    root = server_span(calm, _scope(), "fra")  # type: ignore[arg-type]
    root.attributes["http.response.status_code"] = 200
    root.fill = lambda s: pytest.fail("a dropped trace's attributes were built")
    calm.end(root)
    assert calm.drain(10) == []


async def test_behind_the_gate_the_trace_taps_the_response_start_in_one_send_layer() -> None:
    """The gate's recording ``send`` calls the tracing's tap on the start message: the status
    reaches both the gate and the span, the client gets the trace id header once."""
    tracer = NodeTracer("fra", sampling=SamplingConfig(base_probability=0.0))
    scope = _scope()
    span = server_span(tracer, scope, "fra")  # type: ignore[arg-type]
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    traced = TracedSend(send, span, scope, "fra")  # type: ignore[arg-type]
    gate = Gate("r1", [], send)
    tapped = recording(gate, send, traced.start)
    await tapped({"type": "http.response.start", "status": 502, "headers": ((b"a", b"b"),)})
    await tapped({"type": "http.response.body", "body": b"x"})
    end_server_span(tracer, span, traced)
    assert (gate.status, traced.status) == (502, 502)
    assert sent[0]["headers"] == [(b"a", b"b"), (TRACE_ID_HEADER, span.trace_id.encode())]
    assert sent[1] == {"type": "http.response.body", "body": b"x"}
    (record,) = tracer.drain(10)
    assert record.attributes["http.response.status_code"] == 502


def test_replacing_trace_headers_cuts_our_own_off_the_end_or_filters_anywhere() -> None:
    tracer = NodeTracer("fra")
    root = tracer.server("GET", f"00-{TID}-{PID}-01", "a=b", {})
    first = replace_trace_headers([("TraceParent", "x"), ("host", "h")], root)
    assert first == [("host", "h"), ("traceparent", root.traceparent), ("tracestate", "a=b")]
    child = tracer.child(root, "edgefn.invoke")
    again = replace_trace_headers(first, child, lower=False, ours=root)
    assert again == [("host", "h"), ("traceparent", child.traceparent), ("tracestate", "a=b")]
    moved = [*first, ("x-more", "1")]  # ours are no longer last: every header is compared
    assert replace_trace_headers(moved, child, lower=False, ours=root)[:2] == [
        ("host", "h"),
        ("x-more", "1"),
    ]


def test_store_dedupes_filters_by_function_and_keeps_retention(tmp_path: Path) -> None:
    store = SpanStore(tmp_path / "spans.sqlite", keep_ms=1000, max_spans=3)
    spans = [_span("1" * 16), _span("2" * 16, parent="1" * 16, function="other")]
    assert len(store.ingest(spans, now_ms=0)) == 2
    assert store.ingest(spans, now_ms=1) == []  # a redelivered batch counts once
    assert store.functions_of(TID) == {"fn", "other"}
    assert [s.span_id for s in store.trace(TID, functions={"fn"})] == ["1" * 16]
    assert store.trace(TID) == spans
    [summary] = store.recent("fn")
    assert (summary.trace_id, summary.spans, summary.probability) == (TID, 1, 0.5)
    store.ingest([_span("3" * 16), _span("4" * 16)], now_ms=500)
    assert store.compact(now_ms=600) == 1  # over max_spans: the oldest arrival goes
    assert store.count() == 3
    assert store.compact(now_ms=1200) == 1  # arrived more than keep_ms ago
    assert store.count() == 2
    store.close()
