"""What every RPC handler shares: refusals become statuses, unexpected errors INTERNAL."""

from __future__ import annotations

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


def unary(
    fn: Callable[[S, Req, Any], Awaitable[Resp]],
) -> Callable[[S, Req, Any], Awaitable[Resp]]:
    """Run a unary handler; a MeterError aborts the call with its status and details."""

    @functools.wraps(fn)
    async def handler(self: S, request: Req, context: Any) -> Resp:
        try:
            return await fn(self, request, context)
        except MeterError as e:
            await abort(context, e)
        except Exception:
            # A bug: log it with its traceback, answer INTERNAL, leak nothing of it.
            log.exception("call.crashed", method=fn.__name__)
            await abort(context, INTERNAL)

    return handler
