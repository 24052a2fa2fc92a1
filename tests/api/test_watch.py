"""WatchBalance: the balance first, then every change and alert, from whichever replica."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.support import balance, eventually, fails, grant, rid

# The promise is 100 ms from commit to watcher; the bound leaves room for a loaded CI box.
WITHIN = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
async def replica_b(database_url: str, app: Any) -> AsyncIterator[str]:
    """A second server process on the same database; yields its address once it serves."""
    port = _free_port()
    meter = Path(sys.executable).with_name("meter")
    env = {**os.environ, "METER_LOG_LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        str(meter),
        "serve",
        "--database-url",
        database_url,
        "--listen",
        f"127.0.0.1:{port}",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    target = f"127.0.0.1:{port}"
    try:
        await _wait_serving(target, proc)
        yield target
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _wait_serving(
    target: str, proc: asyncio.subprocess.Process, within: float = 30.0
) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        health = health_pb2_grpc.HealthStub(ch)

        async def serving() -> bool:
            if proc.returncode is not None:
                err = (await proc.stderr.read()).decode() if proc.stderr else ""
                raise AssertionError(f"replica B exited with {proc.returncode}: {err[-2000:]}")
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return answer.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(serving, within=within)


@pytest.fixture
async def stub_b(replica_b: str) -> AsyncIterator[meter_pb2_grpc.MeterStub]:
    async with grpc.aio.insecure_channel(replica_b) as ch:
        yield meter_pb2_grpc.MeterStub(ch)


async def read(call: Any, within: float = WITHIN) -> pb.WatchBalanceResponse:
    message: pb.WatchBalanceResponse = await asyncio.wait_for(call.read(), within)
    assert message is not grpc.aio.EOF
    return message


async def balance_where(call: Any, wanted: Any, within: float = WITHIN) -> pb.Balance:
    """Read the stream until a balance message satisfies `wanted` (alerts are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        message = await read(call, max(deadline - loop.time(), 0.001))
        if message.HasField("balance") and wanted(message.balance):
            return message.balance


async def charge(stub: Any, ws: str, amount: int) -> pb.ChargeResponse:
    return await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws, request_id=rid(), operation="content.optimize", amount=amount
        )
    )


async def test_a_watcher_gets_the_balance_first_then_one_message_per_change(stub, ws):
    await grant(stub, ws, 500)
    call = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
    try:
        first = await read(call)
        assert 500 == first.balance.available

        seen = []
        for _ in range(3):
            await charge(stub, ws, 10)
            seen.append((await read(call)).balance.available)

        assert [490, 480, 470] == seen
    finally:
        call.cancel()


async def test_a_watcher_on_replica_b_sees_a_charge_made_on_replica_a(stub, stub_b, ws):
    await grant(stub, ws, 300)
    call = stub_b.WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
    try:
        assert 300 == (await read(call)).balance.available
        latencies = []
        for expected in (290, 280, 270, 260, 250):
            started = time.perf_counter()
            await charge(stub, ws, 10)
            got = await balance_where(call, lambda b, e=expected: b.available == e)
            latencies.append(time.perf_counter() - started)
            assert expected == got.available
        # The whole round trip (charge on A, notice, read and stream from B) fits the promise.
        assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies
    finally:
        call.cancel()


async def test_a_change_whose_notice_was_lost_still_reaches_the_watcher(app, stub, ws, monkeypatch):
    """A crash between a commit and its announcement loses the notice; the watcher still gets
    the new balance, from the periodic look at the watched workspaces (every 0.5 s here)."""
    await grant(stub, ws, 500)
    call = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
    try:
        assert 500 == (await read(call)).balance.available
        with monkeypatch.context() as m:
            m.setattr(app.announcer, "committed", lambda *notices: None)  # the notice is lost
            await charge(stub, ws, 10)

        got = await balance_where(call, lambda b: b.available == 490, within=5)
        assert 490 == got.available

        # The watcher sent the change once: the next message is the next change.
        await charge(stub, ws, 10)
        assert 480 == (await read(call)).balance.available
    finally:
        call.cancel()


async def test_a_waiting_reserve_on_replica_b_holds_when_a_grant_lands_on_replica_a(
    stub, stub_b, ws
):
    await grant(stub, ws, 5)
    job = rid()
    waiting = asyncio.ensure_future(
        stub_b.Reserve(
            pb.ReserveRequest(
                workspace_id=ws,
                request_id=job,
                amount=40,
                wait_for_funds={"seconds": 10},
            ),
            timeout=15,
        )
    )
    await _refused_once(stub, ws, job)

    await grant(stub, ws, 100)

    held = await asyncio.wait_for(waiting, WITHIN)
    assert (pb.HOLD_STATE_HELD, 40) == (held.hold.state, held.hold.amount)
    assert 65 == (await balance(stub, ws)).available


async def _refused_once(stub: Any, ws: str, job: str) -> None:
    """Wait until the reservation's first refusal is recorded (it is waiting from then on)."""

    async def refused() -> bool:
        found = await stub.ListAlerts(pb.ListAlertsRequest(workspace_id=ws))
        return any(a.request_id == job for a in found.alerts)

    await eventually(refused, within=5)


async def test_alert_events_reach_the_watcher(stub, ws):
    await grant(stub, ws, 105)
    call = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
    try:
        await read(call)
        await charge(stub, ws, 10)

        kinds = []
        while pb.ALERT_KIND_LOW not in kinds:
            message = await read(call)
            if message.HasField("alert"):
                kinds.append(message.alert.kind)
                assert (ws, 95, 100) == (
                    message.alert.workspace_id,
                    message.alert.available,
                    message.alert.threshold,
                )
        assert [pb.ALERT_KIND_LOW] == kinds
    finally:
        call.cancel()


async def test_a_watcher_that_reconnects_gets_the_current_state_first(stub, ws):
    await grant(stub, ws, 200)
    first = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
    assert 200 == (await read(first)).balance.available
    first.cancel()

    await charge(stub, ws, 30)
    again = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
    try:
        b = (await read(again)).balance
        assert (170, 30) == (b.available, b.lifetime_used)
        assert pb.ENTRY_KIND_CHARGE == b.last_transaction.kind
    finally:
        again.cancel()


async def test_a_slow_watcher_does_not_slow_writers_and_ends_on_the_latest_balance(stub, ws):
    await grant(stub, ws, 1000)
    call = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
    try:
        assert 1000 == (await read(call)).balance.available
        # The watcher reads nothing while 60 charges go through.
        await asyncio.wait_for(asyncio.gather(*(charge(stub, ws, 1) for _ in range(60))), 10)

        messages = 0

        def final(b: pb.Balance) -> bool:
            nonlocal messages
            messages += 1
            return b.available == 940

        await balance_where(call, final)
        assert messages <= 60
    finally:
        call.cancel()


async def test_watching_an_unknown_workspace_is_not_found(stub):
    call = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=f"ws-missing-{rid()}"))
    f = await fails(read(call))
    assert (grpc.StatusCode.NOT_FOUND, "WORKSPACE_NOT_FOUND") == (f.code, f.reason)


async def test_watching_a_malformed_workspace_id_names_the_field(stub):
    call = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id="no spaces"))
    f = await fails(read(call))
    assert (grpc.StatusCode.INVALID_ARGUMENT, ["workspace_id"]) == (f.code, f.fields)


async def test_watchers_keep_up_after_the_listening_connection_is_cut(app, db, stub, ws):
    await grant(stub, ws, 100)
    call = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
    try:
        assert 100 == (await read(call)).balance.available
        before = app.listener.reconnects
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'meter-listener' AND datname = current_database()"
        )

        async def listening_again() -> bool:
            return app.listener.reconnects > before and app.listener.connected.is_set()

        await eventually(listening_again, within=5)
        await charge(stub, ws, 10)

        assert 90 == (await balance_where(call, lambda b: b.available == 90)).available
    finally:
        call.cancel()
