"""Two ways to the same ledger: unary RPCs and the batched Stream, behind one interface.

Tests written against `Path` run through both, so Stream keeps every promise the unary
calls keep (idempotency, overdraw protection, every error).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.rpc import error_details_pb2

from meterpb.v1 import meter_pb2 as pb
from tests.support import Failure, failure


class RefusedError(Exception):
    def __init__(self, f: Failure) -> None:
        super().__init__(f"{f.code.name} {f.reason}: {f.message}")
        self.failure = f


class UnaryPath:
    name = "unary"

    def __init__(self, stub: Any) -> None:
        self.stub = stub

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self.stub, method)(request)
        except grpc.aio.AioRpcError as e:
            raise RefusedError(failure(e)) from None

    async def reserve(self, r: pb.ReserveRequest) -> pb.Hold:
        return (await self._call("Reserve", r)).hold

    async def commit(self, r: pb.CommitRequest) -> pb.CommitResponse:
        return await self._call("Commit", r)

    async def release(self, r: pb.ReleaseRequest) -> pb.Hold:
        return (await self._call("Release", r)).hold

    async def extend(self, r: pb.ExtendRequest) -> pb.Hold:
        return (await self._call("Extend", r)).hold

    async def charge(self, r: pb.ChargeRequest) -> pb.ChargeResponse:
        return await self._call("Charge", r)

    async def close(self) -> None:
        pass


def _status_failure(status: Any) -> Failure:
    reason, metadata, fields, delay = "", {}, [], None
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            fields = [v.field for v in br.field_violations]
        elif d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            d.Unpack(ri)
            delay = ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
    code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
    return Failure(code, status.message, reason, metadata, fields, delay)


class StreamPath:
    """One long-lived Stream per test; concurrent calls share it and results come back in
    any order, matched by (kind, workspace_id, request_id)."""

    name = "stream"

    def __init__(self, stub: Any) -> None:
        self._outbox: asyncio.Queue[pb.StreamItem | None] = asyncio.Queue()
        self._waiting: dict[tuple[str, str, str], list[asyncio.Future[Any]]] = {}
        self._call = stub.Stream(self._requests())
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[pb.StreamRequest]:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            items = [item]
            while not self._outbox.empty():
                nxt = self._outbox.get_nowait()
                if nxt is None:
                    yield pb.StreamRequest(items=items)
                    return
                items.append(nxt)
            yield pb.StreamRequest(items=items)

    async def _read(self) -> None:
        async for response in self._call:
            for result in response.results:
                kind = result.WhichOneof("result") or ""
                # Errors carry no result: match them to the oldest waiter of that id.
                for key in list(self._waiting):
                    if key[1:] == (result.workspace_id, result.request_id) and (
                        not kind or _kinds(key[0], kind)
                    ):
                        fut = self._waiting[key].pop(0)
                        if not self._waiting[key]:
                            del self._waiting[key]
                        fut.set_result(result)
                        break

    async def _send(self, kind: str, request: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((kind, request.workspace_id, request.request_id), []).append(fut)
        await self._outbox.put(pb.StreamItem(**{kind: request}))
        result = await asyncio.wait_for(fut, 30)
        if result.status.code != 0:
            raise RefusedError(_status_failure(result.status))
        return result

    async def reserve(self, r: pb.ReserveRequest) -> pb.Hold:
        return (await self._send("reserve", r)).hold

    async def commit(self, r: pb.CommitRequest) -> pb.CommitResponse:
        return (await self._send("commit", r)).commit

    async def release(self, r: pb.ReleaseRequest) -> pb.Hold:
        return (await self._send("release", r)).hold

    async def extend(self, r: pb.ExtendRequest) -> pb.Hold:
        return (await self._send("extend", r)).hold

    async def charge(self, r: pb.ChargeRequest) -> pb.ChargeResponse:
        return (await self._send("charge", r)).charge

    async def close(self) -> None:
        await self._outbox.put(None)
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await asyncio.wait_for(self._reader, 10)


def _kinds(sent: str, result: str) -> bool:
    return {"reserve": "hold", "release": "hold", "extend": "hold"}.get(sent, sent) == result


async def refused(call: Any) -> Failure:
    try:
        await call
    except RefusedError as e:
        return e.failure
    raise AssertionError("the call succeeded")
