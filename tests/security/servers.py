"""`meter` as a subprocess: the server and CLI exactly as operators run them."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meter.storage.db import normalize_url
from tests.support import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def meter(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a `meter` command to its end: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meter.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    log: list[str] = field(default_factory=list)  # stderr lines, read as they come


@asynccontextmanager
async def serving(
    *args: str, port: int, credentials: grpc.ChannelCredentials | None = None
) -> AsyncIterator[Served]:
    """`meter serve ...` until it answers health checks; SIGTERM and wait on the way out.

    Its stderr (the JSON log) is read all along, so a chatty server never blocks on the pipe;
    `log` is complete once the block has ended.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meter.cli.main",
        "serve",
        *args,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "METER_LOG_LEVEL": "info"},
    )
    served = Served(proc)

    async def drain() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            served.log.append(line.decode(errors="replace"))

    reader = asyncio.create_task(drain())
    try:
        target = f"127.0.0.1:{port}"
        channel = (
            grpc.aio.secure_channel(target, credentials, options=[])
            if credentials
            else grpc.aio.insecure_channel(target)
        )
        async with channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def up() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(f"meter serve exited with {proc.returncode}")
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return False
                return answer.status == health_pb2.HealthCheckResponse.SERVING

            await eventually(up, within=30, interval=0.1)
        yield served
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await reader


@asynccontextmanager
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """An empty database on the same server, dropped afterwards."""
    name = f"meter_sec_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sa.engine.make_url(database_url)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
