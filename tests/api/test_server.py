"""The server as operators see it: health, reflection, database outages, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import grpc
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meter.app import App
from meter.config import Settings
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.proxy import Proxy
from tests.support import eventually, fails, failure, grant, rid


async def test_health_checking_says_serving(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "meter.v1.Meter", "meter.v1.Catalog"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert health_pb2.HealthCheckResponse.SERVING == answer.status


async def test_reflection_lists_the_meter_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for answer in stub.ServerReflectionInfo(ask()):
        names |= {s.name for s in answer.list_services_response.service}
    assert {"meter.v1.Meter", "meter.v1.Catalog", "grpc.health.v1.Health"} <= names


def _through(database_url: str, proxy: Proxy) -> str:
    return (
        sa.engine.make_url(database_url)
        .set(host="127.0.0.1", port=proxy.port, query={})
        .render_as_string(hide_password=False)
    )


def _target(database_url: str) -> tuple[str, int] | str:
    url = sa.engine.make_url(database_url)
    host = url.query.get("host") or url.host or "127.0.0.1"
    if isinstance(host, tuple):
        host = host[0]
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{url.port or 5432}"
    return (host, url.port or 5432)


async def test_a_database_outage_gives_unavailable_and_the_server_recovers_without_restart(
    app, database_url, ws
):
    """`app` has migrated the database; a second server reaches it through a proxy we cut."""
    proxy = await Proxy(_target(database_url)).start()
    url = _through(database_url, proxy)
    second = App(Settings(database_url=url, listen="127.0.0.1:0", sweep_interval_s=0.2), url)
    await second.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as ch:
            stub = meter_pb2_grpc.MeterStub(ch)
            await grant(stub, ws, 10)
            await proxy.cut()
            f = await fails(stub.GetBalance(pb.GetBalanceRequest(workspace_id=ws)))
            assert "UNAVAILABLE" == f.code.name
            f = await fails(
                stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1))
            )
            assert "UNAVAILABLE" == f.code.name
            assert f.retry_delay is not None
            await proxy.restore()

            async def serves() -> bool:
                try:
                    await stub.Charge(
                        pb.ChargeRequest(workspace_id=ws, request_id="after", amount=1)
                    )
                except grpc.aio.AioRpcError as e:
                    # Only UNAVAILABLE may be seen while the server reconnects.
                    return False if failure(e).code.name == "UNAVAILABLE" else e
                return True

            assert True is await eventually(serves, within=10)
            b = await stub.GetBalance(pb.GetBalanceRequest(workspace_id=ws))
            assert 9 == b.available
    finally:
        await second.stop(grace=0.5)
        await proxy.cut()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_sigterm_drains_and_exits_cleanly(app, database_url):
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meter.cli.main",
        "serve",
        "--database-url",
        database_url,
        "--listen",
        f"127.0.0.1:{port}",
        env={**os.environ, "METER_LOG_LEVEL": "warning"},
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)

            async def serving() -> bool:
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return False
                return answer.status == health_pb2.HealthCheckResponse.SERVING

            await eventually(serving, within=30, interval=0.1)
        proc.send_signal(signal.SIGTERM)
        assert 0 == await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
