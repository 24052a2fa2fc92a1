"""The HA tier: a pg_auto_failover cluster of its own, real `meter serve` processes on the URI
it prints, and the figures printed after the run.

It needs Debian's pg_auto_failover packages. Without them it is skipped with a message
naming what is missing, unless METER_HA_REQUIRED is set (CI sets it, after installing
them): then a missing package fails the tier instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.faults.servers import ServerProcess
from tests.ha.cluster import Cluster, Packages, WriteProbe
from tests.support import Db

# One line per scenario, printed in the summary.
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("high-availability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def report(line: str) -> None:
    print(line)
    FIGURES.append(line)


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    packages = Packages.find()
    missing = packages.missing()
    if missing:
        message = "the HA tier needs " + " and ".join(missing) + " (.ci/run installs them)"
        if os.environ.get("METER_HA_REQUIRED"):
            pytest.fail(message)
        pytest.skip(message)
    c = Cluster(packages, tmp_path_factory.mktemp("cluster-logs"))
    try:
        await c.build()
        yield c
    finally:
        await c.close()


@pytest.fixture(scope="module")
async def servers(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[ServerProcess]]:
    """Two replicas, started once on the URI exactly as the cluster printed it: every
    scenario checks that these same processes are still the ones serving."""
    logs = tmp_path_factory.mktemp("meter-logs")
    procs = [
        ServerProcess(cluster.uri, log=logs / f"meter-{i}.log", **cluster.env()) for i in (1, 2)
    ]
    try:
        for p in procs:
            await p.start()
        yield procs
    finally:
        for p in procs:
            await p.stop()


@pytest.fixture(scope="module")
def db(cluster: Cluster) -> Iterator[Db]:
    d = Db(cluster.url_as_user())
    yield d
    d.close()


@pytest.fixture(scope="module")
async def probe(cluster: Cluster) -> WriteProbe:
    p = WriteProbe(cluster.url_as_user())
    await p.create()
    return p
