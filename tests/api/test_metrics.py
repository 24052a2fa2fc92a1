"""Prometheus metrics on their own port: calls, latency, batches, pools, holds, alerts."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc

from meter.app import App
from meter.config import Settings
from meter.storage.db import normalize_url
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.support import eventually, fails, rid


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_the_metrics_endpoint_counts_calls_batches_and_alerts(app, database_url, ws):
    settings = Settings(
        database_url=database_url, listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"
    )
    second = App(settings, normalize_url(database_url))
    await second.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as ch:
            stub = meter_pb2_grpc.MeterStub(ch)
            await stub.GrantCredits(
                pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("g"), amount=150)
            )
            job = rid()
            await stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=60))
            await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=60))
            refused = await fails(
                stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=999))
            )
            assert "FAILED_PRECONDITION" == refused.code.name
        m = await asyncio.to_thread(_scrape, second.metrics_port)
        assert 1 == m['meter_calls_total{code="OK",method="Commit"}']
        assert 1 == m['meter_calls_total{code="FAILED_PRECONDITION",method="Reserve"}']
        assert 2 == m['meter_call_seconds_count{method="Reserve"}']
        assert m["meter_batch_size_count"] >= 3
        # 150 → 90 crosses LOW (100); the refused reservation is an alert too.
        assert m["meter_alerts_fired_total"] >= 2
        assert m['meter_db_pool_connections{pool="ledger",state="size"}'] > 0
        assert "meter_holds_expired_total" in m

        async def holds_sampled() -> bool:
            return "meter_holds_held" in await asyncio.to_thread(_scrape, second.metrics_port)

        await eventually(holds_sampled)
    finally:
        await second.stop(grace=0.5)
