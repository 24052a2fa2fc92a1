"""Meter.Stream: batches of ledger items in, batches of results out, in any order.

Items of every stream go to the one batcher, so they share transactions with each other and
with unary calls. Each stream may have at most MAX_IN_FLIGHT items unanswered; past that it
stops reading its requests, and HTTP/2 flow control pushes back on the client instead of
the server buffering without limit. A failed item gets its own status; the stream stays open.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from meter import errors
from meter.ledger.model import HoldView, ReleaseOutcome
from meter.rpc import convert
from meter.rpc.errors import OK, internal_status, status_proto
from meterpb.v1 import meter_pb2 as pb

MAX_IN_FLIGHT = 4096
MAX_RESULTS_PER_MESSAGE = 1000

log = structlog.get_logger("meter.stream")

# Validates one item (raising MeterError) and starts it; the callback hears its outcome, its
# refusal or the failure of its batch.
Start = Callable[[str, Any, Callable[[Any], None]], None]


def _result(kind: str, request: Any, outcome: Any) -> pb.StreamResult:
    r = pb.StreamResult(request_id=request.request_id, workspace_id=request.workspace_id)
    if isinstance(outcome, errors.MeterError):
        r.status.CopyFrom(status_proto(outcome))
    elif isinstance(outcome, BaseException):
        r.status.CopyFrom(internal_status())
    else:
        r.status.CopyFrom(OK)
        if kind == "commit":
            r.commit.CopyFrom(convert.commit(outcome))
        elif kind == "charge":
            r.charge.CopyFrom(convert.charge(outcome))
        elif isinstance(outcome, ReleaseOutcome):
            r.hold.CopyFrom(convert.hold(outcome.hold))
        else:
            assert isinstance(outcome, HoldView)
            r.hold.CopyFrom(convert.hold(outcome))
    return r


def outcome(fut: asyncio.Future[Any]) -> Any:
    """A finished task's outcome as a stream item's callback hears it."""
    if fut.cancelled():
        return errors.unavailable("the item was cancelled")
    return fut.exception() or fut.result()


async def serve_stream(
    requests: AsyncIterator[pb.StreamRequest],
    start: Start,
    explain: Callable[[errors.MeterError], errors.MeterError],
) -> AsyncIterator[pb.StreamResponse]:
    out: asyncio.Queue[pb.StreamResult | None] = asyncio.Queue()
    # Set while fewer than MAX_IN_FLIGHT items are unanswered (a plain flag and event: an
    # asyncio.Semaphore costs more per item than the rest of the bookkeeping together).
    room = asyncio.Event()
    room.set()
    pending = 0
    reading = True

    def finish(kind: str, request: Any, outcome: Any) -> None:
        nonlocal pending
        if isinstance(outcome, errors.MeterError):
            outcome = explain(outcome)
        elif isinstance(outcome, BaseException):
            log.error("stream.item_failed", error=repr(outcome))
        out.put_nowait(_result(kind, request, outcome))
        pending -= 1
        if pending < MAX_IN_FLIGHT:
            room.set()
        if not reading and pending == 0:
            out.put_nowait(None)

    async def read() -> None:
        nonlocal pending, reading
        try:
            async for message in requests:
                for item in message.items:
                    if pending >= MAX_IN_FLIGHT:
                        room.clear()
                        await room.wait()
                    pending += 1
                    kind = item.WhichOneof("item")
                    if kind is None:
                        finish(
                            "",
                            pb.ReserveRequest(),
                            errors.invalid_field(
                                "items",
                                "an item needs one of reserve, commit, release, extend, charge",
                            ),
                        )
                        continue
                    request = getattr(item, kind)
                    try:
                        start(kind, request, functools.partial(finish, kind, request))
                    except errors.MeterError as e:
                        finish(kind, request, e)
        finally:
            reading = False
            if pending == 0:
                out.put_nowait(None)

    reader = asyncio.create_task(read())
    try:
        while True:
            first = await out.get()
            if first is None:
                break
            batch = [first]
            done = False
            while not out.empty() and len(batch) < MAX_RESULTS_PER_MESSAGE:
                nxt = out.get_nowait()
                if nxt is None:
                    done = True
                    break
                batch.append(nxt)
            yield pb.StreamResponse(results=batch)
            if done:
                break
        await reader
    finally:
        if not reader.done():
            reader.cancel()
