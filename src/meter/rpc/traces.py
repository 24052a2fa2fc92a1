"""A server span per RPC (DESIGN.md §16), continuing the caller's W3C trace context.

Installed only when tracing is on (meter.tracing): without it no interceptor runs at all. It
is the outermost interceptor, so a call's span holds its authentication, its canonical log
line and its handler, and is current while the handler runs: a ledger command queued by the
handler remembers it, and its batch's span links to it (meter.tracing.BatchSpans).

The span is named after the method (`meter.v1.Meter/Reserve`) and carries rpc.system,
rpc.service, rpc.method and rpc.grpc.status_code, plus meter.workspace_id, meter.request_id
and meter.operation when the request has them (a Stream's span has none: its items are
many). A malformed traceparent is ignored (the call starts a new trace), never refused.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from meter.rpc.interceptors import Wrapped

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]

# Not traced: probes call health checks every few seconds, and they say nothing of Meter.
UNTRACED = ("/grpc.health.v1.Health/",)
CARRIED = ("traceparent", "tracestate")
# Request fields that become span attributes when they are set.
FIELDS = (
    ("workspace_id", "meter.workspace_id"),
    ("request_id", "meter.request_id"),
    ("operation", "meter.operation"),
)
# A server span's status is an error for these codes only (OpenTelemetry's gRPC conventions):
# the others are the caller's mistakes or the ledger's answers, not the server's failures.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_W3C = TraceContextTextMapPropagator()


def caller_context(context: Any) -> Context:
    """The caller's trace context from the call's metadata; empty (a new trace) when it sent
    none or a malformed one."""
    carrier: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key in CARRIED and isinstance(value, str):
            carrier[key] = value
    if not carrier:
        return Context()
    return _W3C.extract(carrier, context=Context())


def request_attributes(request: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if not isinstance(request, Message):
        return out
    for field, attribute in FIELDS:
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            out[attribute] = value[:128]
    return out


def status_of(context: Any, default: grpc.StatusCode) -> grpc.StatusCode:
    try:
        code = context.code()
    except Exception:
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        for c in grpc.StatusCode:
            if c.value[0] == code:
                return c
    return default


def failed(context: Any, error: BaseException) -> grpc.StatusCode:
    """The status of a call whose handler raised: what it aborted with, else CANCELLED for a
    call the client went away from, else UNKNOWN."""
    default = (
        grpc.StatusCode.CANCELLED
        if isinstance(error, asyncio.CancelledError)
        else grpc.StatusCode.UNKNOWN
    )
    code = status_of(context, default)
    return default if code is grpc.StatusCode.OK else code


class Traces(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Opens a server span around every call but health checks."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._wrapped = Wrapped()

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(UNTRACED):
            return handler
        return self._wrapped.get(details.method, handler, self._wrap)

    def _start(self, full_method: str, request: Any, context: Any) -> tuple[Any, object]:
        """The call's span, made current; and the token that undoes that."""
        name = full_method.lstrip("/")
        service, _, method = name.rpartition("/")
        attributes: dict[str, str | int] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
        }
        attributes.update(request_attributes(request))
        parent = caller_context(context)
        span = self.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def _end(span: Any, token: Any, code: grpc.StatusCode) -> None:
        otel_context.detach(token)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()

    def _wrap(self, full_method: str, handler: Any) -> Any:
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                span, token = self._start(full_method, request, context)
                code = grpc.StatusCode.OK
                try:
                    return await inner(request, context)
                except BaseException as e:
                    code = failed(context, e)
                    raise
                finally:
                    if code is grpc.StatusCode.OK:
                        code = status_of(context, grpc.StatusCode.OK)
                    self._end(span, token, code)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        for kind, wrap in (
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        ):
            inner_stream = getattr(handler, kind)
            if inner_stream is not None:
                return wrap(
                    self._streaming(full_method, inner_stream),
                    handler.request_deserializer,
                    handler.response_serializer,
                )
        return handler

    def _streaming(self, full_method: str, inner: Any) -> Any:
        """A span for the whole of a streaming call (Stream, WatchBalance): current while it
        runs, so that every item a Stream queues links its batch to it."""

        async def streaming(request: Any, context: Any) -> Any:
            span, token = self._start(full_method, request, context)
            code = grpc.StatusCode.OK
            try:
                out = inner(request, context)
                if inspect.isawaitable(out):
                    await out
                else:
                    async for item in out:
                        yield item
            except BaseException as e:
                code = failed(context, e)
                raise
            finally:
                if code is grpc.StatusCode.OK:
                    code = status_of(context, grpc.StatusCode.OK)
                self._end(span, token, code)

        return streaming
