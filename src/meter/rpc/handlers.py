"""What every RPC handler shares: refusals become statuses, unexpected errors INTERNAL."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from meter.errors import Kind, MeterError
from meter.rpc.errors import abort

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

log = structlog.get_logger("meter.rpc")

INTERNAL = MeterError(Kind.INTERNAL, "INTERNAL", "internal error")
DEADLINE = MeterError(Kind.DEADLINE, "DEADLINE_EXCEEDED", "the call's deadline passed")
# Answer a moment before the deadline, so the caller hears why rather than a bare timeout.
ANSWER_S = 0.01


def _time_left(context: Any) -> float | None:
    remaining: float | None = context.time_remaining()
    return None if remaining is None else max(remaining - ANSWER_S, 0.0)


def unary(
    fn: Callable[[S, Req, Any], Awaitable[Resp]],
) -> Callable[[S, Req, Any], Awaitable[Resp]]:
    """Run a unary handler; a MeterError aborts the call with its status and details."""

    @functools.wraps(fn)
    async def handler(self: S, request: Req, context: Any) -> Resp:
        # A call waits (for a connection, a batch) only as long as its caller waits.
        deadline = asyncio.timeout(_time_left(context))
        try:
            async with deadline:
                return await fn(self, request, context)
        except TimeoutError:
            if not deadline.expired():
                log.exception("call.crashed", method=fn.__name__)
            await abort(context, DEADLINE if deadline.expired() else INTERNAL)
        except MeterError as e:
            await abort(context, e)
        except Exception:
            # A bug: log it with its traceback, answer INTERNAL, leak nothing of it.
            log.exception("call.crashed", method=fn.__name__)
            await abort(context, INTERNAL)

    return handler
