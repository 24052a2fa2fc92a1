"""The event feed on Citus: a position per shard group, each group's feed on its own worker,
read as one feed by a consumer that pages ListEvents while writers go on."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc
import pytest

from meter.storage.shards import SHARDS_SQL, shard_map
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.citus.cluster import Cluster
from tests.citus.conftest import report
from tests.citus.support import FeedReader, deployment, feed_problems, stored_events
from tests.support import rid

pytestmark = pytest.mark.citus

WRITERS = 8
ROUNDS = 40


async def test_a_consumer_paging_while_two_servers_write_on_both_workers_sees_each_event_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Writers on twelve workspaces whose shard groups are on both workers, through two
    servers; a consumer pages the whole feed all along and sees every event exactly once,
    each workspace's in sequence order."""
    async with deployment(cluster, tmp_path) as d:
        spread = await d.spread(6)
        workspaces = [w for ws in spread.values() for w in ws]
        reader = FeedReader(d.targets[0], set(workspaces))
        await reader.start_at_end()
        async with (
            grpc.aio.insecure_channel(d.targets[0]) as a,
            grpc.aio.insecure_channel(d.targets[1]) as b,
        ):
            stubs = [meter_pb2_grpc.MeterStub(a), meter_pb2_grpc.MeterStub(b)]

            async def writer(n: int) -> None:
                s = stubs[n % 2]
                for i in range(ROUNDS):
                    ws = workspaces[(n + i) % len(workspaces)]
                    # A grant is one event; a reservation refused for funds is another.
                    await s.GrantCredits(
                        pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("g"), amount=1),
                        timeout=10,
                    )
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await s.Reserve(
                            pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=10**9),
                            timeout=10,
                        )

            await asyncio.gather(*(writer(n) for n in range(WRITERS)))
        stored = stored_events(d.db, workspaces)
        assert WRITERS * ROUNDS * 2 == len(stored)
        await reader.finish(len(stored))
        groups = shard_map(d.db.rows(SHARDS_SQL))
        keys = {
            r.feed_key
            for r in d.db.rows(
                "SELECT DISTINCT feed_key FROM events WHERE workspace_id = ANY(:w)", w=workspaces
            )
        }
        nodes = {g.node for g in groups.groups if g.feed_key in keys}
    report(
        f"feed on Citus: {len(stored)} events of {len(workspaces)} workspaces in {len(keys)}"
        f" shard groups on {len(nodes)} workers, read in {reader.pages} pages"
    )
    assert [] == feed_problems(reader.seen, stored)
    assert {groups.group(w).feed_key for w in workspaces} == keys
    assert 2 == len(nodes)
