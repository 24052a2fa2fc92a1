"""The Citus tier: a coordinator and two workers of its own, Meter's API tests run against
them, real `meter serve` processes on them while shards move and workers stop.

It needs the citus extension, which neither Debian nor PyPI packages. Without it the tier
is skipped with a message naming what is missing, unless METER_CITUS_REQUIRED=1: then it
fails instead.

The session's `database_url` is overridden here with a database of the cluster (through the
coordinator), so the session `app`, `stub`, `db` and every fixture built on them run on
Citus; the API and events tests are imported into modules of this directory to use them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api.conftest import path  # noqa: F401 (the API tests' fixture, for their imports)
from tests.citus.cluster import Cluster, Install

# One line per scenario, printed in the summary.
FIGURES: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/citus/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.citus)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("citus figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def report(line: str) -> None:
    print(line)
    FIGURES.append(line)


@pytest.fixture(scope="session")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    install = Install.find()
    missing = install.missing()
    if missing:
        message = "the Citus tier needs " + " and ".join(missing)
        if os.environ.get("METER_CITUS_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    c = Cluster(install, tmp_path_factory.mktemp("citus-logs"))
    try:
        await c.build()
        yield c
    finally:
        await c.close()


@pytest.fixture(scope="session")
async def database_url(cluster: Cluster) -> str:
    """The session's database: on every node, Citus in it, reached through the coordinator
    (the session `app` migrates it, which distributes it)."""
    return await cluster.database("meter_session")


@pytest.fixture
async def fresh_url(cluster: Cluster) -> AsyncIterator[str]:
    """A database of the test's own on the cluster, not migrated yet; dropped after."""
    url = await cluster.database()
    yield url
    await cluster.drop(url.rsplit("/", 1)[1].split("?")[0])
