"""An OTLP trace receiver of the test's own: the collector's TraceService over gRPC, built from
opentelemetry-proto's generated stubs, keeping every span it is sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class Span:
    """One received span, its ids as hex as W3C traceparent writes them."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    resource: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, s: trace_pb2.Span, resource: dict[str, Any]) -> Span:
        return cls(
            name=s.name,
            trace_id=s.trace_id.hex(),
            span_id=s.span_id.hex(),
            parent_span_id=s.parent_span_id.hex(),
            kind=s.kind,
            attributes={a.key: _value(a.value) for a in s.attributes},
            links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
            resource=resource,
        )


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests += 1
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                self.spans.extend(Span.of(s, resource) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]


async def start(address: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, Receiver, int]:
    """A running receiver: its server (stop it), the spans it keeps, and its port."""
    server = grpc.aio.server()
    receiver = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(address)
    await server.start()
    return server, receiver, port
