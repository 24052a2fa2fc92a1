"""`meter migrate` on a database with the citus extension distributes Meter's schema, once,
and `meter serve` starts on what it made."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from meter.storage import citus
from meter.storage.shards import SHARDS_SQL, hashtext, shard_map
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.citus.cluster import Cluster
from tests.citus.support import dbname
from tests.faults.servers import ServerProcess
from tests.support import Db, grant

pytestmark = pytest.mark.citus

# The tables Meter keeps, by how Citus is to hold them: hash-distributed by workspace_id,
# hash-distributed by the shard group's feed key, or copied to every node.
BY_WORKSPACE = {
    "workspaces",
    "lots",
    "holds",
    "journal",
    "alerts",
    "budgets",
    "budget_spend",
    "auto_topups",
}
BY_FEED_KEY = {"events", "feed_heads", "webhook_deliveries", "webhook_attempts", "webhook_cursors"}
REFERENCE = {"catalog_versions", "packages", "principals", "webhook_endpoints", "webhook_replays"}

# What Citus's metadata says about the schema: a second migrate must leave all of it as it is.
METADATA = {
    "partition": "SELECT logicalrelid::regclass::text, partmethod, colocationid, repmodel,"
    " column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition ORDER BY 1",
    "shards": "SELECT logicalrelid::regclass::text, shardid, shardminvalue, shardmaxvalue"
    " FROM pg_dist_shard ORDER BY 2",
    "placements": "SELECT shardid, groupid FROM pg_dist_placement ORDER BY 1, 2",
    "objects": "SELECT classid::regclass::text, objid, objsubid FROM pg_dist_object"
    " ORDER BY 1, 2, 3",
    "revision": "SELECT version_num FROM alembic_version",
}


async def meter_migrate(url: str) -> tuple[str, list[dict[str, Any]]]:
    """Run the `meter migrate` command; its output and its JSON log lines."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meter.cli.main", "migrate", "--database-url", url,
        env={**os.environ, "METER_LOG_LEVEL": "info", "METER_LOG_FORMAT": "json"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert 0 == proc.returncode, err.decode()[-3000:]
    lines = [json.loads(s) for s in err.decode().splitlines() if s.startswith("{")]
    return out.decode(), lines


def metadata(db: Db) -> dict[str, list[tuple[Any, ...]]]:
    return {k: [tuple(r) for r in db.rows(q)] for k, q in METADATA.items()}


async def test_meter_migrate_distributes_every_table_and_a_second_run_changes_nothing(
    fresh_url: str, cluster: Cluster, tmp_path: Path
) -> None:
    out, logs = await meter_migrate(fresh_url)
    assert "migrated" in out
    [distributed] = [line for line in logs if line.get("event") == "citus.distributed"]
    assert BY_WORKSPACE | BY_FEED_KEY | REFERENCE == set(distributed["tables"])

    db = Db(fresh_url)
    try:
        tables = {
            r.relname
            for r in db.rows(
                "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p')"
                " AND relnamespace = 'public'::regnamespace AND relname <> 'alembic_version'"
            )
        }
        assert BY_WORKSPACE | BY_FEED_KEY | REFERENCE == tables, "a table nobody placed"
        rows = {r[0]: r[1:] for r in metadata(db)["partition"]}
        assert tables == set(rows)
        colocation = rows["workspaces"][1]
        for table in BY_WORKSPACE:
            assert ("h", colocation, "s", "workspace_id") == rows[table], table
        for table in BY_FEED_KEY:
            assert ("h", colocation, "s", "feed_key") == rows[table], table
        for table in REFERENCE:
            assert ("n", "t", None) == (rows[table][0], rows[table][2], rows[table][3]), table

        # Every distributed table in SHARD_COUNT shards, each shard group on one of the two
        # workers and both workers holding some; none on the coordinator.
        per_table = db.rows(
            "SELECT logicalrelid::regclass::text AS name, count(*) AS n FROM pg_dist_shard"
            " WHERE logicalrelid::regclass::text = ANY(:t) GROUP BY 1",
            t=sorted(BY_WORKSPACE | BY_FEED_KEY),
        )
        assert {(t, citus.SHARD_COUNT) for t in BY_WORKSPACE | BY_FEED_KEY} == {
            (r.name, r.n) for r in per_table
        }
        placed = await cluster.placements(dbname(fresh_url))
        assert {w.port for w in cluster.workers} == set(placed.values())

        # Meter's functions exist on every node (a batch calls them where its group is).
        assert set(citus.FUNCTIONS) <= {
            r.proname
            for r in db.rows(
                "SELECT p.proname FROM pg_dist_object o JOIN pg_proc p ON p.oid = o.objid"
                " WHERE o.classid = 'pg_proc'::regclass"
            )
        }
        for node in cluster.nodes:
            async with await cluster.connect(node, dbname(fresh_url)) as conn:
                found = await (
                    await conn.execute(
                        "SELECT array_agg(DISTINCT proname::text) FROM pg_proc"
                        " WHERE proname = ANY(%s)",
                        (list(citus.FUNCTIONS),),
                    )
                ).fetchone()
                assert found is not None
                assert set(citus.FUNCTIONS) == set(found[0] or ()), node.name

        # Meter's map agrees with Citus: each shard group's feed key lands in the group's
        # own shard, and Meter's hash places workspaces where Citus does.
        groups = shard_map(db.rows(SHARDS_SQL))
        assert citus.SHARD_COUNT == len(groups.groups)
        for g in groups.groups:
            assert g.shard_id == db.scalar(
                "SELECT get_shard_id_for_distribution_column('workspaces', CAST(:k AS text))",
                k=g.feed_key,
            )
        for ws in (f"ws-{i}" for i in range(64)):
            assert hashtext(ws) == db.scalar("SELECT hashtext(:w)", w=ws)
            assert groups.group(ws).shard_id == db.scalar(
                "SELECT get_shard_id_for_distribution_column('workspaces', CAST(:w AS text))",
                w=ws,
            )

        before = metadata(db)
        out, logs = await meter_migrate(fresh_url)
        assert "migrated" in out
        assert [] == [line for line in logs if line.get("event") == "citus.distributed"]
        assert before == metadata(db)
    finally:
        db.close()

    # `meter serve` starts on it, maps every group on both workers, and serves a workspace.
    log = tmp_path / "serve.log"
    server = ServerProcess(fresh_url, log=log, METER_LOG_LEVEL="info")
    try:
        await server.start()
        async with grpc.aio.insecure_channel(server.target) as ch:
            stub = meter_pb2_grpc.MeterStub(ch)
            await grant(stub, "ws-migrated", 7)
            b = await stub.GetBalance(pb.GetBalanceRequest(workspace_id="ws-migrated"))
            assert 7 == b.available
    finally:
        await server.stop()
    lines = [json.loads(s) for s in log.read_text().splitlines() if s.startswith("{")]
    [mapped] = [line for line in lines if line.get("event") == "shards.mapped"]
    assert (citus.SHARD_COUNT, 2) == (mapped["groups"], mapped["nodes"])
