"""The fault suite's retrying workload on Citus: two `meter serve` processes on a database
whose workspaces are spread over both workers, while the servers are SIGKILLed; then the
fault suite's checks (Audit over every workspace, every acknowledged call replayed through
the model: nothing lost, nothing doubled). Then the same workload over unary calls and
Stream leaves no two-phase commit on any node."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.citus.cluster import Cluster
from tests.citus.conftest import report
from tests.citus.support import deployment
from tests.faults.checker import audit, check
from tests.faults.history import History
from tests.faults.workload import Mix, answered, load
from tests.support import eventually, rid

pytestmark = pytest.mark.citus


async def test_sigkilled_servers_on_citus_lose_and_double_no_charge(
    cluster: Cluster, tmp_path: Path
) -> None:
    history = History()
    async with deployment(cluster, tmp_path) as d:
        spread = await d.spread(3)
        workspaces = [w for ws in spread.values() for w in ws]
        async with load(d.targets, history, workspaces, tag="ckill", workers=16):
            for i in range(4):
                await answered(history, 150)
                server = d.servers[i % 2]
                await server.kill()
                await server.start()
            await answered(history, 150)
        figures = await check("SIGKILL of meter serve on Citus", d.targets[0], d.db, history)
        figures.kills = sum(s.kills for s in d.servers)
        figures.restarts = sum(s.starts - 1 for s in d.servers)
    report(figures.line())
    assert (4, 0, 0, 0) == (figures.kills, figures.lost, figures.doubled, figures.unknown)


async def test_no_ledger_transaction_is_two_phase(cluster: Cluster, tmp_path: Path) -> None:
    """Grants, reserves, commits, charges, releases, expiries, refunds, over unary calls and
    Stream, on workspaces of both workers through two servers: Citus keeps a record of every
    two-phase commit a node coordinates (pg_dist_transaction, never recovered here), and no
    node has one.

    Admin calls write reference tables, copied to every node, which Citus commits in two
    phases (the default catalog at start-up, PublishCatalog, webhook endpoints, principals):
    none is made between the records being cleared and read, and what migrate and the
    servers' start did is cleared first."""
    history = History()
    async with deployment(cluster, tmp_path) as d:
        spread = await d.spread(4)
        workspaces = [w for ws in spread.values() for w in ws]
        # Migrate distributed the schema in two-phase commits: their records show that the
        # nodes keep every one, so that an empty record below means none was made.
        assert any((await cluster.prepared_transactions(d.name)).values())
        await cluster.forget_transactions(d.name)
        assert all(not r for r in (await cluster.prepared_transactions(d.name)).values())

        # Short holds, some abandoned: the sweeper's expiries are ledger transactions too.
        mix = Mix(ttl=1.0, abandon=0.1)
        async with load(d.targets, history, workspaces, tag="u2pc", mix=mix, workers=12):
            await answered(history, 300)
        async with load(
            d.targets, history, workspaces, tag="s2pc", mix=mix, workers=24, stream=True
        ):
            await answered(history, 300)

        async def swept() -> bool:
            return 0 == d.db.scalar(
                "SELECT count(*) FROM holds WHERE workspace_id = ANY(:w) AND state = 1",
                w=workspaces,
            )

        await eventually(swept, within=15)
        figures = await check("the two-phase check's workload", d.targets[0], d.db, history)

        charged = [
            c
            for c in history.calls
            if c.kind in ("commit", "charge") and c.outcome == "ok" and c.answer["charged"] > 0
        ]
        refunded = 0
        async with grpc.aio.insecure_channel(d.targets[1]) as ch:
            stub = meter_pb2_grpc.MeterStub(ch)
            for c in {(c.workspace_id, c.request_id): c for c in charged}.values():
                if refunded == 20:
                    break
                await stub.Refund(
                    pb.RefundRequest(
                        workspace_id=c.workspace_id,
                        request_id=rid("refund"),
                        charge_request_id=c.request_id,
                        amount=1,
                    ),
                    timeout=10,
                )
                refunded += 1
        assert [] == [str(x) for x in await audit(d.targets[0])]
        records = await cluster.prepared_transactions(d.name)
        expired = d.db.scalar(
            "SELECT count(*) FROM holds WHERE workspace_id = ANY(:w) AND state = 4",
            w=workspaces,
        )
    figures.notes += [f"{refunded} refunds", f"{expired} holds expired by the sweeper"]
    report(figures.line())
    assert (0, 0) == (figures.lost, figures.doubled)
    assert 20 == refunded
    assert expired > 0
    assert {n.name: [] for n in cluster.nodes} == records
