"""Shared fixtures: a real PostgreSQL, a real Meter server on 127.0.0.1:0, and gRPC stubs.

The database is METER_TEST_DATABASE_URL's server when set (a fresh database is created in
it for the run and dropped after), otherwise an embedded PostgreSQL in a temporary
directory, so a machine with no PostgreSQL still runs the whole suite.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from meter import logs
from meter.app import App
from meter.config import Settings
from meter.storage.db import libpq_url, normalize_url, start_embedded
from meterpb.v1 import catalog_pb2_grpc, events_pb2_grpc, meter_pb2_grpc
from tests.support import Db

logs.configure("warning")
# `meter serve` processes the tests start run one server process each (the tests that signal
# or pause one count on it), unless a test asks for workers (tests/api/test_workers.py).
os.environ["METER_WORKERS"] = "1"

WEBHOOK_SCHEDULE_S = (0.25, 0.5, 1.0, 2.0, 4.0)
WEBHOOK_DISABLE_AFTER_S = 3.0
WEBHOOK_TIMEOUT_S = 1.0
EXPORT_LAG_S = 1.0


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    base = os.environ.get("METER_TEST_DATABASE_URL")
    if not base:
        with tempfile.TemporaryDirectory(prefix="meter-test-pg-") as tmp:
            yield start_embedded(Path(tmp))
        return
    name = f"meter_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(normalize_url(base)).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Db]:
    """Direct SQL access for assertions about what is (and is not) stored."""
    d = Db(database_url)
    yield d
    d.close()


@pytest.fixture(scope="session")
async def app(database_url: str) -> AsyncIterator[App]:
    settings = Settings(
        database_url=database_url,
        listen="127.0.0.1:0",
        sweep_interval_s=0.2,
        catalog_refresh_s=0.5,
        watch_resync_s=0.5,
        grace_s=2.0,
        # Short webhook timings, so that retries, timeouts and auto-disable show in seconds.
        webhook_retry_schedule_s=WEBHOOK_SCHEDULE_S,
        webhook_disable_after_s=WEBHOOK_DISABLE_AFTER_S,
        webhook_timeout_s=WEBHOOK_TIMEOUT_S,
        # ExportJournal answers entries this old: a test waits a second, not two minutes.
        export_lag_s=EXPORT_LAG_S,
    )
    a = App(settings, normalize_url(database_url))
    await a.start()
    yield a
    await a.stop(grace=1.0)


@pytest.fixture(scope="session")
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> meter_pb2_grpc.MeterStub:
    return meter_pb2_grpc.MeterStub(channel)


@pytest.fixture(scope="session")
def events(channel: grpc.aio.Channel) -> events_pb2_grpc.EventsStub:
    return events_pb2_grpc.EventsStub(channel)


@pytest.fixture(scope="session")
def catalog(channel: grpc.aio.Channel) -> catalog_pb2_grpc.CatalogStub:
    return catalog_pb2_grpc.CatalogStub(channel)


@pytest.fixture
def ws() -> str:
    """A workspace id of this test's own."""
    return f"ws-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def pg_url(database_url: str) -> str:
    return libpq_url(database_url)
