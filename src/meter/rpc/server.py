"""The grpc.aio server: Meter, Catalog and Events services, health checking and reflection."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from meter.rpc.catalog import CatalogServicer
from meter.rpc.events import EventsServicer
from meter.rpc.interceptors import CallLog, Observe
from meter.rpc.meter import MeterServicer
from meterpb.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    meter_pb2,
    meter_pb2_grpc,
)

SERVICES = (
    meter_pb2.DESCRIPTOR.services_by_name["Meter"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["Catalog"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["Events"].full_name,
)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Reflection answers from the default descriptor pool, which holds a file once its module is
# imported. Every refusal's details (ErrorInfo, BadRequest, RetryInfo: meter.rpc.errors) are
# declared in this file; importing it here keeps it served whatever else the process imports,
# so that tools which resolve a detail's Any by asking reflection for its type (grpcurl) print
# reason, metadata and field violations instead of bytes.
ERROR_DETAILS_FILE = error_details_pb2.DESCRIPTOR.name
# A call that has arrived waits in gRPC's queue until this process takes it. gRPC refuses a
# call beyond 3,000 waiting (beyond 1,000, now and then), so a burst of page loads opening
# their WatchBalance streams at once was refused or left without a first message. A waiting
# call is bounded by its own deadline instead, as every other queue in Meter is.
MAX_WAITING_CALLS = 100_000


def build(
    meter: MeterServicer,
    catalog: CatalogServicer,
    events: EventsServicer,
    interceptors: list[Any] | None = None,
    guard: Any = None,
    observe: Observe | None = None,
    traces: Any = None,
    reuse_port: bool = False,
) -> tuple[grpc.aio.Server, health_async.HealthServicer]:
    # The guard runs inside CallLog, so refused calls are logged with their status too; a
    # call's span (meter.rpc.traces, only when tracing is on) holds both.
    server = grpc.aio.server(
        interceptors=[
            *(interceptors or []),
            *([traces] if traces else []),
            CallLog(observe),
            *([guard] if guard else []),
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Off unless the workers of one `meter serve --workers N` share the port: a
            # second server on a taken port fails instead of splitting its calls.
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.server.max_pending_requests", MAX_WAITING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_WAITING_CALLS),
        ],
    )
    meter_pb2_grpc.add_MeterServicer_to_server(meter, server)  # type: ignore[no-untyped-call]
    catalog_pb2_grpc.add_CatalogServicer_to_server(catalog, server)  # type: ignore[no-untyped-call]
    events_pb2_grpc.add_EventsServicer_to_server(events, server)  # type: ignore[no-untyped-call]
    health = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            *SERVICES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return server, health


async def set_serving(health: health_async.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICES):
        await health.set(name, status)
