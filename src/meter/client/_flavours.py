"""What the asyncio and the blocking client do differently: the channel, sleeping, shielding.

_async/client.py calls the aio_* names; scripts/client.py renames each to its sync_* twin when
it writes _sync/client.py, so these few lines are the only ones written once per flavour.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from meter.client.options import Connection

T = TypeVar("T")

# A unary stub method: awaited in asyncio, called in the blocking client.
AsyncUnary = Callable[..., Awaitable[T]]
SyncUnary = Callable[..., T]


def aio_channel(c: Connection) -> grpc.aio.Channel:
    if c.tls is not None:
        return grpc.aio.secure_channel(c.target, c.tls.credentials(), c.options)
    return grpc.aio.insecure_channel(c.target, c.options)


def sync_channel(c: Connection) -> grpc.Channel:
    if c.tls is not None:
        return grpc.secure_channel(c.target, c.tls.credentials(), c.options)
    return grpc.insecure_channel(c.target, c.options)


async def aio_close(channel: grpc.aio.Channel) -> None:
    await channel.close(None)  # no grace: calls in flight are cancelled, as the blocking close does


def sync_close(channel: grpc.Channel) -> None:
    channel.close()


async def aio_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def sync_sleep(seconds: float) -> None:
    time.sleep(seconds)


async def aio_shielded(call: Awaitable[T]) -> T:
    # A cancelled job must still give its credits back: the release outlives the cancel.
    return await asyncio.shield(call)


def sync_shielded(result: T) -> T:
    # A blocking call has already run to its end when this sees its result.
    return result
