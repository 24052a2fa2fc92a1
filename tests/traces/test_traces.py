"""Traces over OTLP (DESIGN.md §16): a real `meter serve` exporting to a receiver of the test's.

The server is configured only by the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_BSP_SCHEDULE_DELAY); the caller is this process, tracing
with the SDK and calling through meter.client, which carries the W3C context.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from meter import tracing
from meter.app import App
from meter.client import AsyncMeterClient
from meter.config import StartupError
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.faults.servers import ServerProcess
from tests.support import eventually, rid
from tests.traces import receiver as otlp
from tests.traces.receiver import Receiver, Span

SERVER = 2  # OTLP's SPAN_KIND_SERVER
CLIENT = 3
tracer = TracerProvider().get_tracer("tests")


def otel_env(port: int) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


@pytest.fixture(scope="module")
async def traced(database_url: str, tmp_path_factory: Any) -> AsyncIterator[tuple[Receiver, str]]:
    """A receiver, and a `meter serve` exporting to it: (the receiver, the server's target)."""
    server, receiver, port = await otlp.start()
    log = tmp_path_factory.mktemp("traced") / "serve.log"
    meter = ServerProcess(database_url, log=log, **otel_env(port))
    try:
        await meter.start()
        yield receiver, meter.target
    finally:
        await meter.stop()
        await server.stop(None)


def ids(span: Any) -> tuple[str, str]:
    """(trace id, span id) of an SDK span, in hex as OTLP and traceparent have them."""
    c = span.get_span_context()
    return f"{c.trace_id:032x}", f"{c.span_id:016x}"


async def rpc_span(receiver: Receiver, method: str, request_id: str) -> Span:
    """The server span of the call with this request id, once the receiver has it."""

    async def found() -> Span | None:
        for s in receiver.named(f"meter.v1.Meter/{method}"):
            if s.attributes.get("meter.request_id") == request_id:
                return s
        return None

    span: Span = await eventually(found, within=15)
    return span


async def batch_linked_to(receiver: Receiver, span: Span) -> Span:
    async def found() -> Span | None:
        for s in receiver.named("meter.batch"):
            if (span.trace_id, span.span_id) in s.links:
                return s
        return None

    batch: Span = await eventually(found, within=15)
    return batch


async def children(receiver: Receiver, parent: Span, count: int) -> list[Span]:
    async def found() -> list[Span] | None:
        kids = [s for s in receiver.spans if s.parent_span_id == parent.span_id]
        return kids if len(kids) >= count else None

    kids: list[Span] = await eventually(found, within=15)
    return kids


async def test_a_call_continues_the_callers_trace_and_its_batch_links_to_it(traced, ws):
    receiver, target = traced
    job_id = rid("traced")
    async with AsyncMeterClient(target) as meter:
        await meter.grant(ws, rid("grant"), amount=100)
        with tracer.start_as_current_span("worker.job") as job:
            await meter.reserve(ws, job_id, "content.generate_post", amount=7)
            await meter.commit(ws, job_id, amount=5)
    trace_id, job_span_id = ids(job)

    for method in ("Reserve", "Commit"):
        span = await rpc_span(receiver, method, job_id)
        assert (trace_id, job_span_id) == (span.trace_id, span.parent_span_id)
        assert SERVER == span.kind
        assert {
            "rpc.system": "grpc",
            "rpc.service": "meter.v1.Meter",
            "rpc.method": method,
            "rpc.grpc.status_code": 0,
            "meter.workspace_id": ws,
            "meter.request_id": job_id,
        }.items() <= span.attributes.items()
        assert "meter" == span.resource["service.name"]

        batch = await batch_linked_to(receiver, span)
        assert batch.parent_span_id == ""  # a root: it serves many callers' traces
        assert batch.attributes["meter.batch.size"] >= 1
        assert 0 == batch.attributes["meter.shard_group"]
        db = await children(receiver, batch, 2)
        assert {"meter_load", "meter_write"} <= {s.name for s in db}
        assert all(s.trace_id == batch.trace_id and s.kind == CLIENT for s in db)
        assert all("postgresql" == s.attributes["db.system"] for s in db)
    reserve = await rpc_span(receiver, "Reserve", job_id)
    assert "content.generate_post" == reserve.attributes["meter.operation"]


async def test_a_refused_call_has_its_status_code_on_its_span(traced, ws):
    receiver, target = traced
    job_id = rid("refused")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = meter_pb2_grpc.MeterStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=job_id, amount=5))
    assert grpc.StatusCode.NOT_FOUND == refused.value.code()  # nothing granted: no workspace

    span = await rpc_span(receiver, "Reserve", job_id)
    assert grpc.StatusCode.NOT_FOUND.value[0] == span.attributes["rpc.grpc.status_code"]


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-not-a-trace-01",
        "00-00000000000000000000000000000000-0000000000000000-01",  # all-zero ids are invalid
        "zz",
    ],
)
async def test_a_malformed_traceparent_is_ignored_and_the_call_starts_a_new_trace(
    traced, ws, traceparent
):
    receiver, target = traced
    job_id = rid("malformed")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = meter_pb2_grpc.MeterStub(channel)
        await stub.GrantCredits(
            pb.GrantCreditsRequest(workspace_id=ws, request_id=job_id, amount=10),
            metadata=(("traceparent", traceparent), ("tracestate", "x=1")),
        )

    span = await rpc_span(receiver, "GrantCredits", job_id)
    assert "" == span.parent_span_id
    assert span.trace_id.strip("0")
    assert 0 == span.attributes["rpc.grpc.status_code"]


async def test_a_streams_items_link_their_batches_to_the_stream_span(traced, ws):
    receiver, target = traced
    async with AsyncMeterClient(target) as meter:
        await meter.grant(ws, rid("grant"), amount=100)
        with tracer.start_as_current_span("worker.pool") as pool:
            async with meter.stream_session() as session:
                for i in range(3):
                    await session.reserve(ws, f"stream-{i}", "content.generate_post", amount=2)
    trace_id, pool_span_id = ids(pool)

    async def stream_span() -> Span | None:
        for s in receiver.named("meter.v1.Meter/Stream"):
            if s.trace_id == trace_id and s.parent_span_id == pool_span_id:
                return s
        return None

    stream: Span = await eventually(stream_span, within=15)
    assert "Stream" == stream.attributes["rpc.method"]
    assert "meter.request_id" not in stream.attributes  # a stream's items are many
    await batch_linked_to(receiver, stream)


async def test_without_otel_variables_the_app_has_no_tracing_hooks(app: App):
    """The hot path has nothing to skip: no tracer, no batch hook, no interceptor, and the
    ledger pool's connections are psycopg's own."""
    if tracing.wanted():
        pytest.skip("this process's environment asks for tracing")

    assert app.tracing is None
    assert app.batcher._trace is None
    assert app._traces() is None
    assert all(type(p).__name__ != "TracedConnection" for p in app.nodes.pools())
    assert all(p.connection_class.__name__ != "TracedConnection" for p in app.nodes.pools())
    assert tracing.configure({}) is None
    assert (
        tracing.configure({"OTEL_SERVICE_NAME": "meter", "OTEL_BSP_SCHEDULE_DELAY": "10"}) is None
    )
    assert (
        tracing.configure(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_SDK_DISABLED": "true"}
        )
        is None
    )


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_a_server_without_the_endpoint_variable_exports_nothing(database_url, ws, tmp_path):
    """Other OTEL_* variables alone turn nothing on: a receiver on the default OTLP port
    (where an SDK with defaults would send) hears nothing from a busy server."""
    if not _free(4317):
        pytest.skip("127.0.0.1:4317 is in use; the default endpoint cannot be watched")
    server, receiver, _ = await otlp.start("127.0.0.1:4317")
    env = {k: v for k, v in otel_env(0).items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
    meter = ServerProcess(database_url, log=tmp_path / "serve.log", **env)
    try:
        await meter.start()
        async with AsyncMeterClient(meter.target) as client:
            await client.grant(ws, rid("grant"), amount=10)
            with tracer.start_as_current_span("worker.job"):
                await client.charge(ws, rid("job"), "content.generate_post", amount=1)
        # A clean stop: a server that traced would flush its spans before it exits.
        meter.signal(signal.SIGTERM)
        assert meter.proc is not None
        assert 0 == await meter.proc.wait()
    finally:
        await meter.stop()
        await server.stop(None)
    assert (0, []) == (receiver.requests, receiver.spans)


def test_the_protocol_variable_picks_the_exporter_and_an_unknown_one_refuses_to_start():
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    found = []
    for proto in ("grpc", "http/protobuf"):
        t = tracing.configure({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": proto})
        assert t is not None
        found.append(t.protocol)
        t.provider.shutdown()
    assert ["grpc", "http/protobuf"] == found
    with pytest.raises(StartupError, match="use grpc or http/protobuf"):
        tracing.configure({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    traces_only = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}
    t = tracing.configure({**traces_only, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})
    assert t is not None
    assert "http/protobuf" == t.protocol
    t.provider.shutdown()
