"""StreamSession: many coroutines' ledger calls packed into batches over one Meter.Stream.

A worker pool's coroutines each ``await session.reserve(...)`` / ``commit(...)`` as if the
calls were unary; the session sends whatever is queued as one StreamRequest, and hands each
coroutine its own result (results come back in any order and grouping, matched by workspace,
request id and kind) or raises the same typed exception as the unary call would.

Calls for the same (workspace, request id) are sent one after the other, never together:
a job's Commit must not overtake its Reserve, and it keeps the matching unambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from meter.client import requests as rq
from meter.client.errors import (
    DeadlineExceeded,
    MeterError,
    Unavailable,
    from_rpc_error,
    from_status,
)
from meter.client.ids import pick_request_id
from meter.client.options import Connection
from meter.client.retry import Attempts, RetryPolicy
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc


class StreamClient(Protocol):
    """What a session uses of its AsyncMeterClient (a protocol, so that this module and
    meter.client.aio, which makes sessions, do not import each other)."""

    connection: Connection

    @property
    def stub(self) -> meter_pb2_grpc.MeterStub: ...

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]: ...


Key = tuple[str, str]
# Which oneof of StreamResult carries each kind's answer.
_RESULT_FIELD = {
    "reserve": "hold",
    "release": "hold",
    "extend": "hold",
    "commit": "commit",
    "charge": "charge",
}


@dataclass(slots=True)
class _Pending:
    kind: str
    future: asyncio.Future[pb.StreamResult]


class StreamSession:
    """Batches concurrent Reserve/Commit/Release/Extend/Charge calls over one stream.

    Use it as ``async with client.stream_session() as session:``. If the stream breaks,
    the calls in flight raise `Unavailable` (retried with the same request id per the
    retry policy, over a new stream).

    Args:
        client: the AsyncMeterClient whose channel, token and retry policy are used.
        max_batch: at most this many items per StreamRequest.
        retry: overrides the client's retry policy for items.
    """

    def __init__(
        self, client: StreamClient, *, max_batch: int = 500, retry: RetryPolicy | None = None
    ) -> None:
        self._client = client
        self._max_batch = max_batch
        self._retry = retry or client.connection.retry
        self._pending: dict[Key, _Pending] = {}
        self._outbox: asyncio.Queue[pb.StreamItem | None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._closed = False
        #: StreamRequest messages and items sent so far (how well calls were batched).
        self.messages_sent = 0
        self.items_sent = 0

    async def __aenter__(self) -> StreamSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Finish the stream once every item sent has its answer."""
        self._closed = True
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._receiver is not None:
            await self._receiver

    # The calls.

    async def reserve(
        self,
        workspace: str,
        request_id: str | None = None,
        operation: str = "",
        *,
        job_id: str | None = None,
        usage: pb.Usage | None = None,
        amount: int | None = None,
        actor: str = "",
        labels: rq.Labels | None = None,
        ttl: rq.Seconds | None = None,
        wait_for_funds: rq.Seconds | None = None,
    ) -> pb.Hold:
        """As `MeterClient.reserve`, batched."""
        request = rq.reserve(
            workspace, pick_request_id(request_id, job_id), operation, usage=usage,
            amount=amount, actor=actor, labels=labels, ttl=ttl, wait_for_funds=wait_for_funds,
        )  # fmt: skip
        result = await self._submit(pb.StreamItem(reserve=request), rq.funds_wait(wait_for_funds))
        return result.hold

    async def commit(
        self,
        workspace: str,
        request_id: str | None = None,
        *,
        job_id: str | None = None,
        usage: pb.Usage | None = None,
        amount: int | None = None,
        labels: rq.Labels | None = None,
    ) -> pb.CommitResponse:
        """As `MeterClient.commit`, batched."""
        request = rq.commit(
            workspace, pick_request_id(request_id, job_id), usage=usage, amount=amount,
            labels=labels,
        )  # fmt: skip
        return (await self._submit(pb.StreamItem(commit=request))).commit

    async def release(
        self, workspace: str, request_id: str | None = None, *, job_id: str | None = None
    ) -> pb.Hold:
        """As `MeterClient.release`, batched; returns the released hold."""
        request = pb.ReleaseRequest(
            workspace_id=workspace, request_id=pick_request_id(request_id, job_id)
        )
        return (await self._submit(pb.StreamItem(release=request))).hold

    async def extend(
        self,
        workspace: str,
        request_id: str | None = None,
        *,
        job_id: str | None = None,
        ttl: rq.Seconds | None = None,
    ) -> pb.Hold:
        """As `MeterClient.extend`, batched."""
        request = rq.extend(workspace, pick_request_id(request_id, job_id), ttl)
        return (await self._submit(pb.StreamItem(extend=request))).hold

    async def charge(
        self,
        workspace: str,
        request_id: str | None = None,
        operation: str = "",
        *,
        job_id: str | None = None,
        usage: pb.Usage | None = None,
        amount: int | None = None,
        actor: str = "",
        labels: rq.Labels | None = None,
    ) -> pb.ChargeResponse:
        """As `MeterClient.charge`, batched."""
        request = rq.charge(
            workspace, pick_request_id(request_id, job_id), operation, usage=usage,
            amount=amount, actor=actor, labels=labels,
        )  # fmt: skip
        return (await self._submit(pb.StreamItem(charge=request))).charge

    # The machinery.

    async def _submit(self, item: pb.StreamItem, extra: float = 0.0) -> pb.StreamResult:
        kind = item.WhichOneof("item")
        assert kind is not None
        tries = Attempts(self._retry, kind, None, extra)
        while True:
            limit = tries.next_timeout()
            try:
                return await self._once(kind, item, limit)
            except MeterError as e:
                error = e
            await asyncio.sleep(tries.backoff(error))

    async def _once(self, kind: str, item: pb.StreamItem, limit: float) -> pb.StreamResult:
        if self._closed:
            raise RuntimeError("the stream session is closed")
        request = getattr(item, kind)
        key = (request.workspace_id, request.request_id)
        # One item per key in flight: wait for the earlier one's answer, whatever it is.
        while (earlier := self._pending.get(key)) is not None:
            await asyncio.wait([earlier.future])
        future: asyncio.Future[pb.StreamResult] = asyncio.get_running_loop().create_future()
        self._pending[key] = _Pending(kind, future)
        self._outbox_for_sending().put_nowait(item)
        try:
            async with asyncio.timeout(limit):
                # Shielded: a late answer still resolves the future and frees the key.
                result = await asyncio.shield(future)
        except TimeoutError:
            raise DeadlineExceeded(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no answer to {kind} {key[1]!r} within {limit:.3g}s",
            ) from None
        if result.status.code != 0:
            raise from_status(result.status)
        return result

    def _outbox_for_sending(self) -> asyncio.Queue[pb.StreamItem | None]:
        if self._outbox is None or self._receiver is None or self._receiver.done():
            self._outbox = asyncio.Queue()
            stub: Any = self._client.stub
            # Written with call.write() from a task of ours rather than through a request
            # iterator: when the server goes away mid-stream, grpc.aio then has no iterator of
            # ours to close while it is still waiting, and nothing of the session's is left
            # pending or unretrieved.
            call = stub.Stream(metadata=self._client.metadata)
            self._receiver = asyncio.create_task(self._receive(call, self._outbox))
        return self._outbox

    async def _send(self, call: Any, outbox: asyncio.Queue[pb.StreamItem | None]) -> None:
        """Write what is queued, batched, until the session closes or the call ends."""
        while True:
            first = await outbox.get()
            if first is None:
                await call.done_writing()
                return
            # Everything queued meanwhile rides in the same message.
            batch = [first]
            closing = False
            while len(batch) < self._max_batch and not outbox.empty():
                item = outbox.get_nowait()
                if item is None:
                    closing = True
                    break
                batch.append(item)
            await call.write(self._message(batch))
            if closing:
                await call.done_writing()
                return

    def _message(self, batch: list[pb.StreamItem]) -> pb.StreamRequest:
        self.messages_sent += 1
        self.items_sent += len(batch)
        return pb.StreamRequest(items=batch)

    async def _receive(self, call: Any, outbox: asyncio.Queue[pb.StreamItem | None]) -> None:
        failure: MeterError | None = None
        sender = asyncio.create_task(self._send(call, outbox))

        def sender_done(task: asyncio.Task[None]) -> None:
            # A sender that fails ends the call, so that this loop ends too. (A write fails
            # when the call has ended already; cancelling an ended call changes nothing.)
            if not task.cancelled() and task.exception() is not None:
                call.cancel()

        sender.add_done_callback(sender_done)
        try:
            async for response in call:
                for result in response.results:
                    self._resolve(result)
        except grpc.RpcError as e:
            failure = from_rpc_error(e)
        except asyncio.CancelledError:
            failure = Unavailable(grpc.StatusCode.UNAVAILABLE, "the stream was cancelled")
            raise
        finally:
            # The call's status (above) says why it ended, not the write it cut short.
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            # Whatever is still unanswered will not be answered on this stream.
            failure = failure or Unavailable(
                grpc.StatusCode.UNAVAILABLE, "the stream ended before answering"
            )
            for key, pending in list(self._pending.items()):
                if not pending.future.done():
                    pending.future.set_exception(failure)
                    # Retrieved here so that an abandoned future does not log a warning.
                    with contextlib.suppress(MeterError):
                        pending.future.exception()
                del self._pending[key]

    def _resolve(self, result: pb.StreamResult) -> None:
        key = (result.workspace_id, result.request_id)
        pending = self._pending.pop(key, None)
        if pending is None:
            return  # an answer to an item this session no longer waits for
        carried = result.WhichOneof("result")
        if carried is not None and carried != _RESULT_FIELD[pending.kind]:
            pending.future.set_exception(
                MeterError(
                    grpc.StatusCode.INTERNAL,
                    f"a {carried} result answered a {pending.kind} item of {key[1]!r}",
                )
            )
            return
        if not pending.future.done():
            pending.future.set_result(result)
