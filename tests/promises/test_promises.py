"""Every promise over any sequence of calls: a real server against a model (machine.py).

`make test` runs a bounded budget twice: with a fixed seed, and with a fresh seed that it
prints, so that a failure found by chance can be replayed (METER_PROMISES_SEED=N). `make
promises` runs a long one (METER_PROMISES_STEPS, 10,000 steps by default there).
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis.stateful import run_state_machine_as_test

from meter.app import App
from meter.config import Settings
from meter.storage.db import normalize_url
from tests.promises.driver import Server
from tests.promises.machine import Promises

# Steps per run, and steps per example (a fresh set of workspaces): the budget `make test`
# spends on each of its two runs, unless METER_PROMISES_STEPS says otherwise.
STEPS = int(os.environ.get("METER_PROMISES_STEPS", "300"))
STEPS_PER_EXAMPLE = 30
# METER_PROMISES_SHRINK=0 reports the first failure as found, without shrinking it.
PHASES = (
    [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("METER_PROMISES_SHRINK") == "0"
    else list(Phase)
)


@pytest.fixture(scope="module")
def own_database(database_url: str) -> Iterator[str]:
    """A database of the test's own on the tests' server: its clock runs days ahead, and its
    sweeper would otherwise sweep other tests' workspaces (some left inconsistent on purpose,
    for Audit to find) at that time too."""
    name = f"meter_promises_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sa.engine.make_url(normalize_url(database_url))
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
async def server(own_database: str) -> AsyncIterator[Server]:
    """Two replicas of the test's own: their clocks are pinned, their sweepers run when told."""
    url = normalize_url(own_database)
    apps = [
        App(Settings(database_url=url, listen="127.0.0.1:0", sweep_interval_s=3600.0), url)
        for _ in range(2)
    ]
    for app in apps:
        await app.start()
    s = Server(apps, asyncio.get_running_loop())
    try:
        yield s
    finally:
        s.close()
        for app in apps:
            await app.stop(grace=1.0)


def _run(server: Server, at_seed: int) -> None:
    Promises.server = server
    Promises.steps = 0
    Promises.seen.clear()
    Promises.start = datetime.now(UTC).replace(
        hour=9, minute=17, second=0, microsecond=0
    ) + timedelta(days=2)
    machine = seed(at_seed)(Promises)
    try:
        _run_machine(machine)
    finally:
        print(f"model-based test: {Promises.steps} steps checked")
        print("events and refusals seen:", dict(sorted(Promises.seen.items())))


def _run_machine(machine: type[Promises]) -> None:
    run_state_machine_as_test(
        machine,
        settings=settings(
            # An example stops before its last step now and then: about 25 steps each.
            max_examples=max(-(-STEPS // 25), 1),
            stateful_step_count=STEPS_PER_EXAMPLE,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
            phases=PHASES,
        ),
    )


async def test_every_promise_holds_over_random_calls_with_a_fixed_seed(server: Server) -> None:
    await asyncio.to_thread(_run, server, 20261208)


async def test_every_promise_holds_over_random_calls_with_a_fresh_seed(server: Server) -> None:
    chosen = int(os.environ.get("METER_PROMISES_SEED") or random.randrange(2**32))
    print(f"model-based test seed: {chosen} (replay with METER_PROMISES_SEED={chosen})")
    await asyncio.to_thread(_run, server, chosen)
