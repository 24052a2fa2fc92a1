"""Distributing the schema on Citus (DESIGN.md §8), as `meter migrate` does after migrating.

On a database with the citus extension (the coordinator), every table that grows with use is
distributed and co-located with workspaces: the ledger's by workspace_id, the events outbox
and the webhook tables by their shard group's feed key (meter.storage.shards), which Citus
places in the same shard as the group's workspaces. The tables that do not grow with use
(the catalog, packages, principals, webhook endpoints, replays) become reference tables,
copied to every node; Meter's functions are created on every node. It is idempotent: what is
distributed already is left as it is, so every `meter migrate` (and every `meter serve`,
which migrates at start) may run it; on plain PostgreSQL it does nothing.

A database that ran on plain PostgreSQL before keeps its events: they were all in the one
feed (key ''), and are moved to their groups' feeds, in the order they had, before their
tables are distributed; each endpoint's fan-out position goes with them.
"""

from __future__ import annotations

import structlog
from sqlalchemy import Connection, text

from meter.storage.shards import SHARDS_SQL, shard_map

log = structlog.get_logger("meter.citus")

BY_WORKSPACE = (
    "workspaces",  # first: the others are co-located with it
    "lots",
    "holds",
    "journal",
    "alerts",
    "budgets",
    "budget_spend",
    "auto_topups",
)
BY_FEED_KEY = ("events", "feed_heads", "webhook_deliveries", "webhook_attempts", "webhook_cursors")
REFERENCE = ("catalog_versions", "packages", "principals", "webhook_endpoints", "webhook_replays")
FUNCTIONS = ("meter_load", "meter_events", "meter_int8s")
# Shards per distributed table: enough for a cluster to grow to that many nodes.
SHARD_COUNT = 32


def installed(conn: Connection) -> bool:
    return bool(
        conn.execute(
            text("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')")
        ).scalar()
    )


def distribute(conn: Connection, shard_count: int = SHARD_COUNT) -> list[str]:
    """Distribute what is not distributed yet; returns the tables it distributed now. The
    caller commits (each Citus call below runs in the caller's transaction)."""
    if not installed(conn):
        return []
    done = set(
        conn.execute(text("SELECT logicalrelid::regclass::text FROM pg_dist_partition")).scalars()
    )
    now: list[str] = []
    conn.execute(text(f"SET LOCAL citus.shard_count = {int(shard_count)}"))
    for table in BY_WORKSPACE:
        if table not in done:
            colocate = "'none'" if table == "workspaces" else "'workspaces'"
            conn.execute(
                text(
                    f"SELECT create_distributed_table('{table}', 'workspace_id',"
                    f" colocate_with => {colocate})"
                )
            )
            now.append(table)
    if any(t not in done for t in BY_FEED_KEY):
        _move_feeds_to_groups(conn)
    for table in BY_FEED_KEY:
        if table not in done:
            conn.execute(
                text(
                    f"SELECT create_distributed_table('{table}', 'feed_key',"
                    " colocate_with => 'workspaces')"
                )
            )
            now.append(table)
    for table in REFERENCE:
        if table not in done:
            conn.execute(text(f"SELECT create_reference_table('{table}')"))
            now.append(table)
    _functions_everywhere(conn)
    if now:
        log.info("citus.distributed", tables=now)
    return now


def _functions_everywhere(conn: Connection) -> None:
    """Meter's functions on every node: a batch calls meter_load where its shard group is.
    Functions made after citus was installed are already; older ones are distributed here."""
    for name in FUNCTIONS:
        for signature in conn.execute(
            text(
                "SELECT p.oid::regprocedure::text FROM pg_proc p"
                " WHERE p.proname = :n AND p.pronamespace = 'public'::regnamespace"
                " AND NOT EXISTS (SELECT FROM pg_dist_object o"
                "   WHERE o.classid = 'pg_proc'::regclass AND o.objid = p.oid)"
            ),
            {"n": name},
        ).scalars():
            conn.execute(text("SELECT create_distributed_function(:f)"), {"f": signature})


def _move_feeds_to_groups(conn: Connection) -> None:
    """Events written on plain PostgreSQL are in the one feed (key ''): move each to its
    workspace's group, numbered in the order it had; deliveries and attempts follow their
    events, and each endpoint's fan-out position becomes one per group past the same events."""
    groups = shard_map(conn.execute(text(SHARDS_SQL)).all())
    if not conn.execute(text("SELECT EXISTS (SELECT FROM events WHERE feed_key = '')")).scalar():
        return
    workspaces = list(
        conn.execute(text("SELECT DISTINCT workspace_id FROM events WHERE feed_key = ''")).scalars()
    )
    keys = [groups.group(w).feed_key for w in workspaces]
    conn.execute(
        text(
            "CREATE TEMP TABLE meter_feed_keys ON COMMIT DROP AS"
            " SELECT * FROM unnest(CAST(:w AS text[]), CAST(:k AS text[])) AS u(workspace_id, k)"
        ),
        {"w": workspaces, "k": keys},
    )
    for statement in (
        """CREATE TEMP TABLE meter_feed_moves ON COMMIT DROP AS
           SELECT e.workspace_id, e.sequence, e.feed_pos AS old, m.k,
                  row_number() OVER (PARTITION BY m.k ORDER BY e.feed_pos) AS pos
             FROM events e JOIN meter_feed_keys m USING (workspace_id)
            WHERE e.feed_key = ''""",
        """UPDATE events e SET feed_key = v.k, feed_pos = v.pos FROM meter_feed_moves v
            WHERE e.feed_key = '' AND e.workspace_id = v.workspace_id
              AND e.sequence = v.sequence""",
        "DELETE FROM feed_heads",
        "INSERT INTO feed_heads SELECT k, max(pos) FROM meter_feed_moves GROUP BY k",
        """UPDATE webhook_deliveries d SET feed_key = m.k FROM meter_feed_keys m
            WHERE d.feed_key = '' AND d.workspace_id = m.workspace_id""",
        """UPDATE webhook_attempts a SET feed_key = m.k FROM meter_feed_keys m
            WHERE a.feed_key = '' AND a.workspace_id = m.workspace_id""",
        """INSERT INTO webhook_cursors (feed_key, endpoint_id, pos)
           SELECT g.k, c.endpoint_id,
                  coalesce((SELECT max(v.pos) FROM meter_feed_moves v
                             WHERE v.k = g.k AND v.old <= c.pos), 0)
             FROM webhook_cursors c CROSS JOIN unnest(CAST(:all AS text[])) AS g(k)
            WHERE c.feed_key = ''""",
        "DELETE FROM webhook_cursors WHERE feed_key = ''",
    ):
        conn.execute(text(statement), {"all": sorted({g.feed_key for g in groups.groups})})
    log.info("citus.feeds_moved", workspaces=len(workspaces), groups=len(set(keys)))
