"""Meter on a pg_auto_failover cluster while it fails over, switches over, loses its standby
and takes its old primary back.

Each scenario runs the fault suite's retrying workload against the same two `meter serve`
processes (started once, on the URI `pg_autoctl show uri` prints), breaks the cluster, and
checks the result as the fault suite does: Audit over every workspace and a replay of every
acknowledged call through the model: no charge lost, none doubled. Unavailability is
measured from the fault: the failover manager's part until the cluster commits a write again
(WriteProbe), then Meter's until it answers a job's call.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.faults.checker import Figures, check
from tests.faults.history import History
from tests.faults.servers import ServerProcess, serving
from tests.faults.workload import answered, load, workspaces
from tests.ha.cluster import Cluster, Node, WriteProbe
from tests.ha.conftest import report
from tests.support import Db, grant, rid

pytestmark = pytest.mark.ha

WRITES = {"reserve", "commit", "release", "charge", "grant"}
# Meter's part of a failover: from the cluster taking writes to a job's call answered.
METER_TARGET_S = 1.0


@dataclass
class Outage:
    """Seconds without service after one fault, as the clients lived it."""

    fault: str
    manager: float  # the cluster's longest stop in taking writes after the fault
    meter: float  # from the cluster taking writes again until Meter answers a job's call
    gap: float  # the clients' longest wait between two answered calls after the fault

    def line(self) -> str:
        return (
            f"{self.fault}: {self.manager + self.meter:.2f}s without service = "
            f"{self.manager:.2f}s failover manager + {self.meter:.2f}s Meter "
            f"(longest gap between answers {self.gap:.2f}s)"
        )


def _longest_gap(times: list[float], after: float) -> tuple[float, float]:
    """The longest interval between consecutive times that ends after `after` (clipped to
    start there): a kill stops writes at once, a switchover a moment after it is asked."""
    pairs = [(max(a, after), b) for a, b in itertools.pairwise(times) if b > after]
    assert pairs, "nothing happened after the fault"
    return max(pairs, key=lambda p: p[1] - p[0])


def measure(fault: str, at: float, history: History, probe: WriteProbe) -> Outage:
    stopped, ready = _longest_gap(probe.commits, at)
    done = sorted(c.done for c in history.calls if c.outcome == "ok" and c.kind in WRITES)
    served = next((d for d in done if d >= ready), None)
    assert served is not None, f"{fault}: Meter answered nothing after the cluster came back"
    first, last = _longest_gap(done, at)
    return Outage(fault, ready - stopped, served - ready, last - first)


async def promoted(cluster: Cluster, dead: Node, within: float = 60.0) -> Node:
    """Wait until the monitor has made another node the primary (writable)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for name, (reported, assigned) in (await cluster.state()).items():
            if (
                name != dead.name
                and reported == assigned
                and reported in ("wait_primary", "primary")
            ):
                return cluster.nodes[name]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no promotion within {within}s: {await cluster.state()}")


async def still_serving(servers: list[ServerProcess]) -> None:
    """The same processes, never restarted, answering health checks."""
    for s in servers:
        assert s.proc is not None
        assert s.proc.returncode is None, f"{s.target} exited"
        assert 1 == s.starts
        assert await serving(s.target, deadline=5)


async def audited(name: str, servers: list[ServerProcess], db: Db, history: History) -> Figures:
    """The fault suite's checker. Its own connections went to the old primary: drop them."""
    db.engine.dispose()
    return await check(name, servers[0].target, db, history)


async def notice_delay(servers: list[ServerProcess]) -> float:
    """Seconds from a grant through one replica until a watcher on the other sees it: the
    change notice travels through the new primary's NOTIFY and the LISTEN connection."""
    ws = workspaces(1)[0]
    async with (
        grpc.aio.insecure_channel(servers[0].target) as a,
        grpc.aio.insecure_channel(servers[1].target) as b,
    ):
        writer = meter_pb2_grpc.MeterStub(b)
        await grant(writer, ws, 10)
        watch = meter_pb2_grpc.MeterStub(a).WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
        assert 10 == (await asyncio.wait_for(watch.read(), 10)).balance.available
        sent = time.monotonic()
        await grant(writer, ws, 5)
        while True:
            event = await asyncio.wait_for(watch.read(), 10)
            if event.HasField("balance") and event.balance.available == 15:
                watch.cancel()
                return time.monotonic() - sent


def finish(figures: Figures, outages: list[Outage]) -> None:
    figures.notes += [o.line() for o in outages]
    report(figures.line())
    assert (0, 0, 0) == (figures.lost, figures.doubled, figures.unknown)


@pytest.fixture
async def probing(probe: WriteProbe) -> AsyncIterator[WriteProbe]:
    probe.start()
    yield probe
    await probe.stop()


def targets(servers: list[ServerProcess]) -> list[str]:
    return [s.target for s in servers]


async def test_a_killed_primary_fails_over_and_the_same_servers_serve_on(
    cluster: Cluster, servers: list[ServerProcess], db: Db, probing: WriteProbe
) -> None:
    """SIGKILL of the primary's keeper and Postgres together (a machine lost): the monitor
    promotes the secondary, and Meter's pools, engines and LISTEN connection find it through
    the multi-host URI without a restart."""
    await cluster.settled()
    history = History()
    async with load(targets(servers), history, workspaces(4), tag="ha-kill", workers=12):
        await answered(history, 150)
        primary = await cluster.primary()
        at = time.monotonic()
        await cluster.kill(primary)
        await promoted(cluster, primary)
        await answered(history, 150, within=60)
    outage = measure("primary SIGKILLed", at, history, probing)
    figures = await audited("HA: primary SIGKILLed", servers, db, history)
    figures.kills = 1
    await still_serving(servers)
    notice = await notice_delay(servers)
    figures.notes.append(f"a change notice crossed replicas in {notice * 1000:.0f} ms")
    finish(figures, [outage])
    assert outage.meter <= METER_TARGET_S
    # Well under the watchers' 5 s resync: the notice itself came through.
    assert notice < 2.0


async def test_the_old_primary_rejoins_as_secondary_under_load(
    cluster: Cluster, servers: list[ServerProcess], db: Db, probing: WriteProbe
) -> None:
    """The killed node's keeper starts again: it rewinds, follows the new primary, catches
    up and becomes the synchronous secondary while jobs run."""
    down = [n for n in cluster.nodes.values() if not n.running]
    if not down:  # run alone: lose a primary first
        primary = await cluster.primary()
        await cluster.kill(primary)
        await promoted(cluster, primary)
        down = [primary]
    history = History()
    async with load(targets(servers), history, workspaces(4), tag="ha-rejoin", workers=12):
        await answered(history, 100)
        at = time.monotonic()
        await cluster.run(down[0])
        await cluster.settled()
        rejoined = time.monotonic() - at
        await answered(history, 100, within=60)
    assert down[0] is await cluster.secondary()
    outage = measure("old primary rejoins", at, history, probing)
    figures = await audited("HA: old primary rejoins", servers, db, history)
    figures.restarts = 1
    figures.notes.append(f"secondary again after {rejoined:.1f}s")
    await still_serving(servers)
    finish(figures, [outage])


async def test_a_planned_switchover_costs_seconds_and_loses_nothing(
    cluster: Cluster, servers: list[ServerProcess], db: Db, probing: WriteProbe
) -> None:
    """`pg_autoctl perform switchover` under load, on a cluster that has been steady for a
    few seconds: pg_auto_failover 2.0 asked for a switchover just as its primary reports
    `primary` may set that primary to wait_primary instead of draining (synchronous
    replication off) while it promotes the secondary, and the writes the old primary then
    acknowledges are rewound away (hapostgres/pg_auto_failover#774; this tier once lost 914
    jobs so). docs/high-availability.md has the precautions."""
    await cluster.steady()
    history = History()
    async with load(targets(servers), history, workspaces(4), tag="ha-switch", workers=12):
        await answered(history, 150)
        before = await cluster.primary()
        at = time.monotonic()
        await cluster.switchover()
        await cluster.settled()
        await answered(history, 150, within=60)
    assert before is await cluster.secondary()
    outage = measure("switchover", at, history, probing)
    figures = await audited("HA: planned switchover", servers, db, history)
    await still_serving(servers)
    finish(figures, [outage])
    assert outage.meter <= METER_TARGET_S


async def test_without_its_standby_the_primary_acknowledges_nothing_it_could_lose(
    cluster: Cluster, servers: list[ServerProcess], db: Db, probing: WriteProbe, tmp_path: Path
) -> None:
    """The secondary dies: commits wait for its acknowledgement until the monitor tells the
    primary to go on alone (wait_primary). It comes back, catches up, and then the primary
    is killed: everything acknowledged meanwhile must be on the node promoted in its place.
    A third server with --require-sync-standby refuses writes (UNAVAILABLE) while the
    primary is alone, and takes them again once the standby streams."""
    await cluster.settled()
    strict = ServerProcess(
        cluster.uri, log=tmp_path / "strict.log", METER_REQUIRE_SYNC_STANDBY="1", **cluster.env()
    )
    await strict.start()
    history = History()
    try:
        assert "OK" == await strict_grant(strict)
        async with load(targets(servers), history, workspaces(4), tag="ha-standby", workers=12):
            await answered(history, 150)
            primary, secondary = await cluster.primary(), await cluster.secondary()
            at = time.monotonic()
            await cluster.kill(secondary)
            await answered(history, 150, within=60)
            alone = measure("secondary SIGKILLed", at, history, probing)
            while_alone = await strict_grant(strict)
            await cluster.run(secondary)
            await cluster.settled()
            await answered(history, 100, within=60)
            strict_back = await strict_grant(strict, until_ok=True)
            failover_at = time.monotonic()
            await cluster.kill(primary)
            assert secondary is await promoted(cluster, primary)
            await answered(history, 150, within=60)
    finally:
        await strict.stop()
    failover = measure("then primary SIGKILLed", failover_at, history, probing)
    figures = await audited("HA: secondary lost, back, then primary lost", servers, db, history)
    figures.kills, figures.restarts = 2, 1
    figures.notes.append(
        f"--require-sync-standby: {while_alone} while the primary was alone, "
        f"{strict_back} once the standby streamed again"
    )
    await still_serving(servers)
    await cluster.run(primary)
    await cluster.settled()
    finish(figures, [alone, failover])
    # The commits in flight waited for the lost standby: nothing was acknowledged without it
    # until the monitor decided the primary goes on alone (wait_primary).
    assert alone.manager > 0.5
    assert failover.meter <= METER_TARGET_S
    assert "UNAVAILABLE: no synchronous standby would have the write; retry" == while_alone
    assert "OK" == strict_back


async def strict_grant(server: ServerProcess, until_ok: bool = False) -> str:
    """One grant through the server (retried until it succeeds, within 10 s, with until_ok):
    "OK", or the refusal's code and message."""
    deadline = time.monotonic() + 10
    async with grpc.aio.insecure_channel(server.target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        while True:
            try:
                await stub.GrantCredits(
                    pb.GrantCreditsRequest(
                        workspace_id="ws-strict-probe", request_id=rid("strict"), amount=1
                    ),
                    timeout=5,
                )
                return "OK"
            except grpc.aio.AioRpcError as e:
                answer = f"{e.code().name}: {e.details()}"
                if not until_ok or time.monotonic() > deadline:
                    return answer
            await asyncio.sleep(0.2)
