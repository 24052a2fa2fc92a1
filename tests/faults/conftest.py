"""Fault tests: a fresh database per scenario, and the figures printed after the run.

Each scenario gets a database of its own (never the session's shared one: other tests plant
discrepancies there on purpose, and the checker audits every workspace it finds).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from meter.storage.db import migrate, normalize_url
from tests.support import Db

# One line per scenario: "N jobs, K kills, R restarts, 0 lost, 0 doubled".
FIGURES: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("fault-injection figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def fresh_url(database_url: str) -> Iterator[str]:
    """A new, migrated database on the test PostgreSQL, dropped afterwards."""
    base = sa.engine.make_url(database_url)
    name = f"meter_fault_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def fresh_db(fresh_url: str) -> Iterator[Db]:
    d = Db(fresh_url)
    yield d
    d.close()


def report(line: str) -> None:
    """Keep a scenario's figures for the summary (and print them for -s runs)."""
    print(line)
    FIGURES.append(line)
