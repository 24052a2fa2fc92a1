"""Server interceptors: one canonical log line per call, with its status and latency.

The same interceptor feeds the call metrics (`observe`), so logs and metrics never disagree
about a call's status.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf.message import Message

log = structlog.get_logger("meter")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]
# (method, status code name, seconds)
Observe = Callable[[str, str, float], None]


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

    def __init__(self, observe: Observe | None = None) -> None:
        self._observe = observe or (lambda method, code, seconds: None)
        self._wrapped = Wrapped()

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        return self._wrapped.get(details.method, handler, self._wrap)

    def _wrap(self, full_method: str, handler: Any) -> Any:
        method = full_method.rsplit("/", 1)[-1]
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
                    self._finished(method, code, start, request)

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
                    self._streaming(method, inner_stream),
                    handler.request_deserializer,
                    handler.response_serializer,
                )
        return handler

    def _streaming(self, method: str, inner: Any) -> Any:
        """Wrap a server-streaming handler (unary or bidirectional request side alike)."""

        async def streaming(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            try:
                async for item in _items(inner(request, context)):
                    yield item
            finally:
                self._finished(method, _code(context, "OK"), start, request)

        return streaming

    def _finished(self, method: str, code: str, start: float, request: Any) -> None:
        """The call's canonical log line, and its metrics: the two never disagree."""
        elapsed = time.perf_counter() - start
        # A bidirectional call's request is the stream of them: no ids to log.
        fields = _fields(request) if isinstance(request, Message) else {}
        log.info("call.finished", method=method, code=code, ms=round(elapsed * 1000, 2), **fields)
        self._observe(method, code, elapsed)


async def _items(out: Any) -> Any:
    """A streaming handler's messages: it either yields them or, like grpc's own health
    Watch, writes them with context.write() and returns a coroutine."""
    if inspect.isawaitable(out):
        await out
        return
    async for item in out:
        yield item


class Wrapped:
    """An interceptor's wrapped handlers, one per method: wrapping builds closures and a
    handler object, which would otherwise be done again for every call."""

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[Any, Any]] = {}

    def get(self, method: str, handler: Any, wrap: Callable[[str, Any], Any]) -> Any:
        known = self._by_method.get(method)
        if known is None or known[0] is not handler:
            known = self._by_method[method] = (handler, wrap(method, handler))
        return known[1]


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
