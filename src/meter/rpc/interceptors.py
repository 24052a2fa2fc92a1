"""Server interceptors: one canonical log line per call, with its status and latency."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog

log = structlog.get_logger("meter")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


def _fields(request: Any) -> dict[str, str]:
    out = {}
    for name in ("workspace_id", "request_id"):
        value = getattr(request, name, "")
        if value:
            out[name] = value[:128]
    return out


class CallLog(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Logs `call.finished` once per call: method, workspace, request id, code, latency.

    Never the request body, never credentials (DESIGN.md §6).
    """

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                code = "OK"
                try:
                    return await inner(request, context)
                except BaseException:
                    code = _code(context, "UNKNOWN")
                    raise
                finally:
                    if code == "OK":
                        code = _code(context, "OK")
                    log.info(
                        "call.finished",
                        method=method,
                        code=code,
                        ms=round((time.perf_counter() - start) * 1000, 2),
                        **_fields(request),
                    )

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                try:
                    async for item in inner_us(request, context):  # type: ignore[attr-defined]
                        yield item
                finally:
                    log.info(
                        "call.finished",
                        method=method,
                        code=_code(context, "OK"),
                        ms=round((time.perf_counter() - start) * 1000, 2),
                        **_fields(request),
                    )

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(requests: Any, context: Any) -> Any:
                start = time.perf_counter()
                try:
                    async for item in inner_ss(requests, context):  # type: ignore[attr-defined]
                        yield item
                finally:
                    log.info(
                        "call.finished",
                        method=method,
                        code=_code(context, "OK"),
                        ms=round((time.perf_counter() - start) * 1000, 2),
                    )

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


def _code(context: Any, default: str) -> str:
    try:
        code = context.code()
    except Exception:
        return default
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code.name
    return str(code)
