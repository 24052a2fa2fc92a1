"""An OTLP/gRPC trace sink for measuring what tracing costs: it accepts spans and counts them.

    python -m bench.otlp_sink [--listen 127.0.0.1:4317]     # Ctrl-C prints the count

Run `python -m bench.run` beside it with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317
(the server it starts inherits the variable). The sink decodes every request, as a collector
would, and keeps nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0
        self.requests = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests += 1
        self.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    sink = Sink()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(listen)
    await server.start()
    print(f"otlp sink on {listen}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        print(f"{sink.spans} spans in {sink.requests} requests", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:4317")
    args = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen))


if __name__ == "__main__":
    main()
