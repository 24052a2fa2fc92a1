"""The server's lifecycle under stress: SIGTERM drains, a locked workspace never hangs a call,
and an operator can follow one job through the logs by its request id."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.faults.servers import ServerProcess
from tests.support import eventually, rid

GRACE = 10.0  # Settings.grace_s


def _seconds(s: float) -> Duration:
    d = Duration()
    d.FromMilliseconds(int(s * 1000))
    return d


async def test_sigterm_turns_health_not_serving_ends_a_waiting_reserve_and_exits_0(fresh_url, ws):
    """A Reserve waiting for funds is in flight at SIGTERM: health says NOT_SERVING first, the
    Reserve ends UNAVAILABLE (retry elsewhere), not "insufficient credits", within the grace,
    and the process exits 0."""
    server = await ServerProcess(fresh_url).start()
    try:
        async with grpc.aio.insecure_channel(server.target) as ch:
            stub = meter_pb2_grpc.MeterStub(ch)
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
            assert health_pb2.HealthCheckResponse.SERVING == (await watch.read()).status
            await stub.GrantCredits(
                pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("g"), amount=1)
            )
            waiting = asyncio.ensure_future(
                stub.Reserve(
                    pb.ReserveRequest(
                        workspace_id=ws, request_id=rid(), amount=5, wait_for_funds=_seconds(60)
                    ),
                    timeout=70,
                )
            )

            async def refused_once() -> bool:
                alerts = await stub.ListAlerts(pb.ListAlertsRequest(workspace_id=ws))
                return len(alerts.alerts) > 0

            await eventually(refused_once)  # the Reserve was refused once and now waits
            server.signal(signal.SIGTERM)
            sent = time.monotonic()
            status = await asyncio.wait_for(watch.read(), 5)
            assert health_pb2.HealthCheckResponse.NOT_SERVING == status.status
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await waiting
            assert grpc.StatusCode.UNAVAILABLE == e.value.code()
            assert time.monotonic() - sent < GRACE
        assert server.proc is not None
        assert 0 == await asyncio.wait_for(server.proc.wait(), GRACE + 5)
    finally:
        await server.stop()


async def test_sigterm_lets_an_in_flight_charge_finish(fresh_url, fresh_db, ws):
    """The Charge waits behind a row lock held by a test transaction; SIGTERM comes; the lock
    goes; the Charge completes within the grace period and the process exits 0."""
    server = await ServerProcess(fresh_url).start()
    try:
        async with grpc.aio.insecure_channel(server.target) as ch:
            stub = meter_pb2_grpc.MeterStub(ch)
            await stub.GrantCredits(
                pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("g"), amount=10)
            )
            with fresh_db.engine.connect() as conn:
                conn.exec_driver_sql(
                    "SELECT 1 FROM workspaces WHERE workspace_id = %(w)s FOR UPDATE", {"w": ws}
                )
                charge = asyncio.ensure_future(
                    stub.Charge(
                        pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=3), timeout=20
                    )
                )

                async def waiting_on_the_lock() -> bool:
                    n = fresh_db.scalar(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'tuple'"
                        " OR (NOT granted AND locktype = 'transactionid')"
                    )
                    return bool(n)

                await eventually(waiting_on_the_lock)
                server.signal(signal.SIGTERM)
                await asyncio.sleep(0)  # let the signal land before the lock goes
                conn.rollback()
            answer = await charge
            assert 3 == answer.charged
        assert server.proc is not None
        assert 0 == await asyncio.wait_for(server.proc.wait(), GRACE + 5)
    finally:
        await server.stop()


async def test_a_locked_workspace_never_hangs_calls(fresh_url, fresh_db, ws):
    """Batches wait on a row lock from a test connection: every call still ends with a status
    (DEADLINE_EXCEEDED within its deadline), and the server serves again once the lock goes."""
    server = await ServerProcess(fresh_url).start()
    try:
        async with grpc.aio.insecure_channel(server.target) as ch:
            stub = meter_pb2_grpc.MeterStub(ch)
            await stub.GrantCredits(
                pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("g"), amount=100)
            )
            with fresh_db.engine.connect() as conn:
                conn.exec_driver_sql(
                    "SELECT 1 FROM workspaces WHERE workspace_id = %(w)s FOR UPDATE", {"w": ws}
                )

                async def charge(deadline: float | None) -> tuple[str, float]:
                    start = time.monotonic()
                    try:
                        await stub.Charge(
                            pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1),
                            timeout=deadline,
                        )
                    except grpc.aio.AioRpcError as e:
                        return e.code().name, time.monotonic() - start
                    return "OK", time.monotonic() - start

                short = await asyncio.gather(*(charge(1.0) for _ in range(10)))
                assert {"DEADLINE_EXCEEDED"} == {code for code, _ in short}
                assert max(t for _, t in short) < 1.5
                conn.rollback()
            answer = await stub.Charge(
                pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1), timeout=5
            )
            assert 1 == answer.charged
    finally:
        await server.stop()


async def test_one_job_can_be_followed_by_its_request_id_in_the_logs(fresh_url, tmp_path, ws):
    log = tmp_path / "server.log"
    server = await ServerProcess(fresh_url, log=log, METER_LOG_LEVEL="info").start()
    job = rid("job")
    try:
        async with grpc.aio.insecure_channel(server.target) as ch:
            stub = meter_pb2_grpc.MeterStub(ch)
            await stub.GrantCredits(
                pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("g"), amount=10)
            )
            await stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=4))
            await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=3))
            await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=3))
    finally:
        server.signal(signal.SIGTERM)
        assert server.proc is not None
        try:
            await asyncio.wait_for(server.proc.wait(), GRACE + 5)
        finally:
            await server.stop()  # killed if the drain did not end it
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    mine = [x for x in lines if x.get("request_id") == job]
    assert [("Reserve", "OK"), ("Commit", "OK"), ("Commit", "OK")] == [
        (x["method"], x["code"]) for x in mine
    ]
    assert all(x["event"] == "call.finished" and x["workspace_id"] == ws for x in mine)
    assert all(isinstance(x["ms"], float | int) for x in mine)
