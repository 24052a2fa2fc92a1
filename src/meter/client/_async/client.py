"""The client's calls, written once: AsyncClientBase, composed of one mixin per service area.

The asyncio flavour is this package; the blocking one, _sync/, is generated from it by
scripts/client.py (unasync: `async def` -> `def`, `await x` -> `x`, `AsyncJob` -> `Job`, the
aio_* helpers of _flavours.py -> their sync_* twins), and `make client-check` fails on drift.
The public classes are meter.client.aio.AsyncMeterClient and meter.client.sync.MeterClient.
"""

from __future__ import annotations

from meter.client._async.catalog import AsyncCatalogCalls
from meter.client._async.credits import AsyncCreditCalls
from meter.client._async.holds import AsyncHoldCalls
from meter.client._async.reads import AsyncReadCalls
from meter.client._async.webhooks import AsyncEventCalls


class AsyncClientBase(
    AsyncHoldCalls, AsyncCreditCalls, AsyncReadCalls, AsyncCatalogCalls, AsyncEventCalls
):
    """The calls of a Meter client. Every call raises a `meter.client.errors.MeterError`
    subclass on failure; unary calls are retried per the connection's retry policy."""
