"""Fixtures for the client's tests: clients pointed at the session's real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from meter.app import App
from meter.client import AsyncMeterClient, RetryPolicy


@pytest.fixture
def target(app: App) -> str:
    return f"127.0.0.1:{app.port}"


@pytest.fixture
async def meter(target: str) -> AsyncIterator[AsyncMeterClient]:
    """An asyncio client with quick retries, so a test about failures stays fast."""
    client = AsyncMeterClient(target, retry=RetryPolicy(initial_backoff=0.01, budget=10))
    yield client
    await client.close()
