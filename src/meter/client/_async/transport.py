"""The channel and the retrying unary call that every method of the client goes through."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self, TypeVar

import grpc

from meter.client import _flavours
from meter.client.errors import from_rpc_error
from meter.client.options import Tls, connection
from meter.client.retry import Attempts, RetryPolicy
from meter.client.tracecontext import with_trace
from meterpb.v1 import catalog_pb2_grpc, events_pb2_grpc, meter_pb2_grpc

T = TypeVar("T")


class AsyncTransport:
    """The connection every call goes over: the channel, its stubs, and retries."""

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: Tls | None = None,
        retry: RetryPolicy | None = None,
        options: Iterable[tuple[str, int | str]] = (),
    ) -> None:
        self.connection = connection(target, token, tls, retry, options)
        c = self.connection
        self._channel = _flavours.aio_channel(c)
        self._meter = meter_pb2_grpc.MeterStub(self._channel)
        self._catalog = catalog_pb2_grpc.CatalogStub(self._channel)
        self._events = events_pb2_grpc.EventsStub(self._channel)
        self._metadata = c.metadata()

    async def close(self) -> None:
        await _flavours.aio_close(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self,
        method: _flavours.AsyncUnary[T],
        request: Any,
        timeout: float | None = None,
        extra: float = 0.0,
    ) -> T:
        name = type(request).__name__.removesuffix("Request")
        tries = Attempts(self.connection.retry, name, timeout, extra)
        # Every attempt is a child of the caller's span, when it has one.
        metadata = with_trace(self._metadata)
        while True:
            try:
                return await method(
                    request,
                    timeout=tries.next_timeout(),
                    metadata=metadata,
                    wait_for_ready=tries.wait_for_ready,
                )
            except grpc.RpcError as e:
                error = from_rpc_error(e)
            await _flavours.aio_sleep(tries.backoff(error))
