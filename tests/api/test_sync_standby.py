"""--require-sync-standby: credits are committed only while a synchronous standby streams.

The test PostgreSQL has no standby at all, so every ledger write must be refused as
retryable (UNAVAILABLE, with a RetryInfo) and leave nothing behind; reads still answer. The
HA tier shows the other side: on a cluster with its standby the same server writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from meter.app import App
from meter.config import Settings
from meter.storage.db import normalize_url
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.support import Db, fails, grant, rid


@pytest.fixture
async def guarded(database_url: str) -> AsyncIterator[meter_pb2_grpc.MeterStub]:
    settings = Settings(database_url=database_url, listen="127.0.0.1:0", require_sync_standby=True)
    a = App(settings, normalize_url(database_url))
    await a.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as ch:
        yield meter_pb2_grpc.MeterStub(ch)
    await a.stop(grace=1.0)


async def test_without_a_synchronous_standby_nothing_is_committed(guarded, stub, db: Db, ws):
    await grant(stub, ws, 10)  # through the shared server, which does not ask for a standby
    job = rid()
    refused = await fails(
        guarded.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=4))
    )
    granted = await fails(
        guarded.GrantCredits(pb.GrantCreditsRequest(workspace_id=ws, request_id=rid(), amount=5))
    )

    assert ("UNAVAILABLE", "UNAVAILABLE") == (refused.code.name, refused.reason)
    assert "no synchronous standby" in refused.message
    assert refused.retry_delay is not None
    assert "UNAVAILABLE" == granted.code.name
    assert 0 == db.scalar("SELECT count(*) FROM holds WHERE workspace_id = :w", w=ws)
    assert 1 == db.scalar("SELECT count(*) FROM journal WHERE workspace_id = :w", w=ws)
    # Reads need no standby.
    assert 10 == (await guarded.GetBalance(pb.GetBalanceRequest(workspace_id=ws))).available
