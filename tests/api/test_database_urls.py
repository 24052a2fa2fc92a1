"""Real connections through every kind of URL: multi-host with a dead host first, passwords
from the URL, PGPASSWORD or a password file, and one line on the terminal for a bad URL."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from meter.app import App
from meter.config import Settings
from meter.storage import db
from meter.storage.dburl import DatabaseUrl
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.faults.servers import PrivatePostgres, free_port
from tests.support import eventually, grant, rid


def _dead_host_first(database_url: str, spelling: str) -> str:
    """The test database behind a closed port on 127.0.0.1, which libpq tries first."""
    url = DatabaseUrl.parse(database_url)
    hosts = [("127.0.0.1", str(free_port())), *url.hosts]
    names = [h or "localhost" for h, _ in hosts]
    ports = [p or "5432" for _, p in hosts]
    auth = url.params.get("user", "")
    if "password" in url.params:
        auth += ":" + url.params["password"]
    auth += "@" if auth else ""
    dbname = url.params["dbname"]
    if spelling == "libpq" and not any(n.startswith("/") for n in names):
        netloc = ",".join(f"{n}:{p}" for n, p in zip(names, ports, strict=True))
        return f"postgres://{auth}{netloc}/{dbname}?target_session_attrs=read-write"
    if spelling == "sqlalchemy":
        query = "&".join(f"host={n}:{p}" for n, p in zip(names, ports, strict=True))
        if not any(n.startswith("/") for n in names):
            return f"postgresql+psycopg://{auth}/{dbname}?{query}&target_session_attrs=read-write"
    # A socket directory among the hosts: libpq's lists in the query.
    return (
        f"postgresql://{auth}/{dbname}?host={','.join(names)}&port={','.join(ports)}"
        "&target_session_attrs=read-write"
    )


@pytest.fixture(params=["libpq", "sqlalchemy"])
async def multi_host_app(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[App]:
    url = _dead_host_first(database_url, request.param)
    a = App(Settings(database_url=url, listen="127.0.0.1:0"), db.normalize_url(url))
    await a.start()
    yield a
    await a.stop(grace=1.0)


async def test_a_server_on_a_multi_host_url_skips_the_dead_host_and_serves(multi_host_app, ws):
    """Migrations, the engines, the ledger pool and the LISTEN connection all reach the live
    host; a commit is seen by a watcher (so notices travel too)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{multi_host_app.port}") as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        await grant(stub, ws, 50)
        watch = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
        first = await asyncio.wait_for(watch.read(), 10)
        assert 50 == first.balance.available
        job = rid()
        await stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=20))
        done = await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=15))
        assert (15, 35) == (done.charged, done.balance.available)

        async def seen() -> bool:
            event = await asyncio.wait_for(watch.read(), 10)
            return event.HasField("balance") and event.balance.available == 35

        await eventually(seen)
        watch.cancel()
    assert multi_host_app.listener.connected.is_set()


PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
async def password_pg() -> AsyncIterator[PrivatePostgres]:
    """A PostgreSQL of its own that asks every connection for a password."""
    pg = PrivatePostgres(password=PASSWORD)
    try:
        await pg.start()
        yield pg
    finally:
        await pg.close()


def _select_one(url: str) -> int:
    engine = db.sync_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT 1")).scalar_one())
    finally:
        engine.dispose()


async def _pool_select_one(url: str) -> int:
    pool = db.ledger_pool(url, 1)
    await pool.open(wait=True, timeout=10)
    try:
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT 1")).fetchone()
            assert row is not None
            return int(row[0])
    finally:
        await pool.close()


async def test_the_password_comes_from_the_url(password_pg):
    url = DatabaseUrl.parse(password_pg.url).params
    with_password = f"postgresql://postgres:{PASSWORD}@/postgres?host={url['host']}&port=5432"

    assert 1 == _select_one(with_password)
    assert 1 == await _pool_select_one(with_password)


async def test_the_password_comes_from_pgpassword(password_pg, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", PASSWORD)

    assert 1 == _select_one(password_pg.url)
    assert 1 == await _pool_select_one(password_pg.url)


async def test_the_password_comes_from_a_password_file(password_pg, monkeypatch, tmp_path):
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:postgres:{PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    monkeypatch.delenv("PGPASSWORD", raising=False)

    assert 1 == _select_one(password_pg.url)
    assert 1 == await _pool_select_one(password_pg.url)


async def _meter(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meter.cli.main", *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.parametrize("command", ["migrate", "serve"])
async def test_a_url_nobody_reads_is_one_line_and_exit_2(command, tmp_path: Path):
    url = "postgres://127.0.0.1:P1,127.0.0.1:P2/meter?target_session_attrs=read-write"
    code, err = await _meter(command, env={"METER_DATABASE_URL": url, "HOME": str(tmp_path)})

    assert 2 == code
    assert [
        f'meter {command}: --database-url / METER_DATABASE_URL: port "P1" is not a number '
        "from 1 to 65535"
    ] == err.splitlines()


async def test_a_wrong_password_is_one_line_and_exit_3_without_the_password(password_pg):
    url = DatabaseUrl.parse(password_pg.url).params
    wrong = f"postgresql://postgres:not-{PASSWORD}@/postgres?host={url['host']}&port=5432"
    code, err = await _meter("migrate", "--database-url", wrong)

    assert 3 == code
    assert 1 == len(err.splitlines()), err
    assert err.startswith("meter migrate: cannot reach the database: ")
    assert "password authentication failed" in err
    assert PASSWORD not in err
