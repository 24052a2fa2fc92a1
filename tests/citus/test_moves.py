"""Shard groups moving between the workers while Meter writes them.

Under load: the fault suite's workload on two servers while groups move to the other worker
and back; nothing lost or doubled, the feed read whole and once. At the switch itself: a
batch that has locked its workspaces and found its group on its node (meter_load) must hold
the group there until it commits, or its writes would land on the group's new node without
its lock, beside another batch's."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from meter.storage import ledger_sql as sql
from meter.storage.db import migrate
from tests.citus.cluster import Cluster
from tests.citus.conftest import report
from tests.citus.support import (
    FeedReader,
    dbname,
    deployment,
    feed_problems,
    stored_events,
    write_events,
)
from tests.faults.checker import check
from tests.faults.history import History
from tests.faults.workload import answered, load
from tests.support import eventually

pytestmark = pytest.mark.citus

# How long a move held up by an open batch is watched for not finishing.
HELD_S = 3.0


async def test_shard_groups_moved_under_load_lose_double_and_repeat_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Shard groups holding the workload's workspaces move to the other worker and back
    while two servers take calls and a consumer pages the feed: the servers follow each move
    (there by logical replication, which copies a group while it takes writes and then
    blocks them briefly; back with writes blocked for the whole copy), no charge is lost or
    doubled, and the feed is read whole, once, in sequence order."""
    history = History()
    async with deployment(cluster, tmp_path, METER_LOG_LEVEL="info") as d:
        spread = await d.spread(3)
        workspaces = [w for ws in spread.values() for w in ws]
        shards = sorted({(await cluster.shard_of(d.name, w))[0] for w in workspaces})
        moving = shards[:4]
        # The feed's own writers, on other workspaces of the moving groups (the workload's
        # history must hold every call on its workspaces, for the checker's replay).
        feeds = await d.in_shards(moving, 2, prefix="ws-e")
        start = await cluster.placements(d.name)
        reader = FeedReader(d.targets[1], set(workspaces) | set(feeds))
        await reader.start_at_end()
        moves = 0
        stop = asyncio.Event()
        feeding = asyncio.create_task(write_events(d.targets, feeds, stop))
        async with load(d.targets, history, workspaces, tag="move", workers=16):
            await answered(history, 100)
            for there_and_back in (True, False):
                for shard in moving:
                    home = cluster.worker_on(start[shard])
                    other = next(w for w in cluster.workers if w is not home)
                    # There by logical replication (writes go on during the copy), back
                    # with writes blocked for the whole copy: both of Citus's ways.
                    if there_and_back:
                        await cluster.move(d.name, shard, other, "force_logical")
                    else:
                        await cluster.move(d.name, shard, home, "block_writes")
                    moves += 1
                    await answered(history, 40)
                now = await cluster.placements(d.name)
                for shard in moving:
                    assert (start[shard] != now[shard]) == there_and_back, shard
            await answered(history, 100)
        stop.set()
        fed = await feeding
        figures = await check("shard moves under load on Citus", d.targets[0], d.db, history)
        stored = stored_events(d.db, [*workspaces, *feeds])
        await reader.finish(len(stored))
        problems = feed_problems(reader.seen, stored)
        await d.still_serving()
        followed = [
            sum(
                1
                for line in s.log.read_text().splitlines()  # type: ignore[union-attr]
                if line.startswith("{") and json.loads(line).get("event") == "shards.moved"
            )
            for s in d.servers
        ]
    figures.notes += [
        f"{moves} shard group moves",
        f"feed: {len(reader.seen)} events ({fed} written meanwhile) in {reader.pages} pages,"
        f" {reader.failures} refused",
        f"each server saw the map change {followed} times",
    ]
    report(figures.line())
    assert (0, 0, 0) == (figures.lost, figures.doubled, figures.unknown)
    assert [] == problems
    assert len(stored) > fed > 100
    assert all(n > 0 for n in followed), "a server never read the moved shard map"


async def test_a_batch_past_its_placement_check_holds_its_group_until_it_commits(
    cluster: Cluster, fresh_url: str
) -> None:
    """meter_load locks a batch's workspaces, then checks that their shard group is on its
    node ("the lock above held the shard's placement still"); the batch's writes follow in
    its next message. A move that switches the group in between sends those writes to the
    group's new node, where the batch holds no lock: another batch there reads and writes
    the same workspace meanwhile, and one's changes overwrite the other's.

    The move is held just before it blocks writes (by a lock of the mode Citus's writes take
    on the group's metadata, on the coordinator), a batch on the group's node runs its
    meter_load, the hold is let go: the move must not finish while the batch is open."""
    await asyncio.to_thread(migrate, fresh_url)
    name = dbname(fresh_url)
    ws = "ws-held"
    async with await cluster.connect(cluster.coordinator, name) as conn:
        # An existing workspace: meter_load then writes nothing, it only locks and reads.
        await conn.execute("INSERT INTO workspaces (workspace_id) VALUES (%s)", (ws,))
    shard, port = await cluster.shard_of(name, ws)
    source = cluster.worker_on(port)
    target = next(w for w in cluster.workers if w is not source)

    async with (
        await cluster.connect(cluster.coordinator, name) as hold,
        await cluster.connect(cluster.coordinator, name) as mover,
        await cluster.connect(source, name) as batch,
    ):
        await hold.execute("BEGIN")
        await hold.execute("SELECT lock_shard_metadata(5, ARRAY[%s]::bigint[])", (shard,))
        found = await (await mover.execute("SELECT pg_backend_pid()")).fetchone()
        assert found is not None
        mover_pid = found[0]
        move = asyncio.create_task(
            mover.execute(
                "SELECT citus_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s,"
                " shard_transfer_mode => 'force_logical')",
                (shard, source.port, target.port),
            )
        )
        try:

            async def blocking_writes() -> bool:
                """The move has copied the group and waits for the hold to block writes."""
                assert not move.done(), move
                waits = await (
                    await hold.execute(
                        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'"
                        " AND mode = 'ExclusiveLock' AND NOT granted",
                        (mover_pid,),
                    )
                ).fetchone()
                return bool(waits and waits[0])

            await eventually(blocking_writes, within=60, interval=0.05)
            # The batch's first message, as the ledger sends it on the group's node.
            cur = await batch.execute(sql.load([ws], [], [], [], [], False, shard=shard))
            cur.nextset()
            loaded = await cur.fetchone()
            assert loaded is not None
            assert ws in loaded[0], "meter_load found no workspace"
            await hold.execute("ROLLBACK")
            done, _ = await asyncio.wait([move], timeout=HELD_S)
        finally:
            await hold.execute("ROLLBACK")
            await batch.execute("ROLLBACK")
            await asyncio.wait_for(move, 60)
    placed = await cluster.placements(name)
    assert target.port == placed[shard]
    assert not done, (
        "the move switched the shard group to the other worker while a batch that had"
        " locked its workspace and passed meter_load's placement check was still open:"
        " its writes would go to the new node, where it holds no lock"
    )
