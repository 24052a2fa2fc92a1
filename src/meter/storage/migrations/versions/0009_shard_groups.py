"""Shard groups: a schema Citus can distribute, and a feed that stays gapless across nodes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08

* The events outbox's feed order becomes a position per shard group (meter.storage.shards):
  events.feed_key names the group (always '' on plain PostgreSQL) and events.feed_pos is its
  place in the group's feed, taken from the group's row of feed_heads under a row lock that
  is held until the writing transaction commits. Positions therefore become visible in order
  and without gaps: a reader resumes after the last position it saw, with no horizon to wait
  for, and a shard group keeps its positions when Citus moves it to another node (they are
  data, moved with it). Existing events are numbered in their old feed order (txid,
  workspace_id, sequence); txid stays, so old page tokens can be translated.
* The events, their deliveries and delivery attempts are keyed by feed_key first (Citus
  distributes them by it, co-located with the workspaces: a group's feed, leases and fan-out
  are router queries on one node). Each endpoint's fan-out position becomes one row per
  shard group in webhook_cursors (was webhook_endpoints.feed_*), so replicas fan out
  different groups side by side.
* meter_load takes the batch's shard (0 on plain PostgreSQL): on Citus every table it reads
  is also filtered by the batch's workspaces as constants (the shard pruning a router query
  needs), and it refuses (SQLSTATE MTR02) a batch whose shard is no longer on this node.
  Plans are no longer pinned by the function itself: its callers' sessions choose them
  (generic plans on plain PostgreSQL, custom ones on Citus, where shard pruning needs the
  values; meter.storage.db.ledger_pool).
* meter_events(...) writes a batch's events at its group's next feed positions.
* meter_int8s(text): a text array of int8 as int8[], declared IMMUTABLE (array_in is STABLE
  for every element type; for int8 it depends on nothing): Citus refuses STABLE functions
  over column references in an UPDATE.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKSPACE = (
    "workspace_id, balance, held, lifetime_used, lifetime_granted, low_threshold,"
    " critical_threshold, alert_level, hold_seq, lot_seq, entry_seq, alert_seq, event_seq,"
    " next_expiry_at, next_notice_at, last_entry_at, last_entry_kind, last_entry_amount,"
    " last_entry_operation, member_limits, auto_topup, created_at"
)
HOLD = (
    "workspace_id, hold_id, request_id, kind, state, amount, charged, shortfall, refunded, late,"
    " operation, catalog_version, actor_id, labels, draw_lots, draw_amounts, fingerprint,"
    " commit_fingerprint, expires_at, created_at, finished_at"
)
LOT = (
    "workspace_id, lot_id, request_id, amount, remaining, expires_at, source, package,"
    " created_at, expiring_noticed, category, priority, state, fingerprint"
)
ENTRY = (
    "workspace_id, entry_id, kind, amount, balance_after, operation, actor_id, request_id, labels,"
    " shortfall, late, reason, package, fingerprint, created_at, category"
)
LIMIT = "workspace_id, actor_id, period, credit_limit"
SPEND = "workspace_id, actor_id, held, day_used, week_used, month_used, noticed, updated_at"
TOPUP = (
    "workspace_id, enabled, threshold, package, amount, monthly_limit, failures, seq,"
    " outstanding, requested_at, month_start, month_count, last_failed"
)

OLD_SIGNATURE = (
    "text[], text[], text[], text[], text[], text[], text[], boolean, text[], text[], text[],"
    " text[], timestamptz"
)
SIGNATURE = OLD_SIGNATURE + ", bigint"


def _row(alias: str, columns: str) -> str:
    return "json_build_array(" + ", ".join(f"{alias}.{c.strip()}" for c in columns.split(",")) + ")"


def _reads(p: str) -> str:
    """meter_load's reads after the lock. `p` is a predicate on a table's workspace_id ($ for
    the column): on Citus, the batch's locked workspaces as a constant array, which lets
    Citus prune every read to the batch's shard; on plain PostgreSQL, nothing."""

    def on(col: str) -> str:
        return p.replace("$", col)

    return f"""
  SELECT json_agg({_row("h", HOLD)}) INTO holds
    FROM unnest(hold_ws, hold_rids) AS r(ws, rid),
    LATERAL (SELECT * FROM holds WHERE workspace_id = r.ws AND request_id = r.rid
             {on("workspace_id")} LIMIT 1) h
    WHERE r.ws = ANY(locked);
  IF cardinality(sweep) > 0 THEN
    SELECT json_agg({_row("h", HOLD)}) INTO overdue FROM holds h
      WHERE h.workspace_id = ANY(sweep) AND h.workspace_id = ANY(locked)
        AND h.state = 1 AND h.expires_at <= at {on("h.workspace_id")};
  END IF;
  SELECT json_agg({_row("l", LOT)}) INTO lots FROM lots l
    WHERE l.workspace_id = ANY(locked) AND l.remaining > 0 {on("l.workspace_id")};
  IF cardinality(entry_ws) > 0 THEN
    SELECT json_agg({_row("j", ENTRY)}) INTO entries
      FROM unnest(entry_ws, entry_rids) AS r(ws, rid),
      LATERAL (SELECT * FROM journal WHERE workspace_id = r.ws AND request_id = r.rid
               AND kind IN (1, 4, 5) {on("workspace_id")} LIMIT 1) j
      WHERE r.ws = ANY(locked);
  END IF;
  IF cardinality(lot_ws) > 0 THEN
    SELECT json_agg({_row("l", LOT)}) INTO by_rid
      FROM unnest(lot_ws, lot_rids) AS r(ws, rid),
      LATERAL (SELECT * FROM lots WHERE workspace_id = r.ws AND request_id = r.rid
               {on("workspace_id")} LIMIT 1) l
      WHERE r.ws = ANY(locked);
  END IF;
  IF limited IS NOT NULL THEN
    SELECT json_agg({_row("m", LIMIT)}) INTO limits FROM member_limits m
      WHERE m.workspace_id = ANY(limited) {on("m.workspace_id")};
    SELECT json_agg({_row("s", SPEND)}) INTO spend FROM (
        SELECT r.ws, r.actor FROM unnest(actor_ws, actor_ids) AS r(ws, actor)
          WHERE r.ws = ANY(limited)
        UNION
        SELECT h.workspace_id, h.actor_id
          FROM unnest(hold_ws, hold_rids) AS r(ws, rid),
          LATERAL (SELECT workspace_id, actor_id FROM holds
                   WHERE workspace_id = r.ws AND request_id = r.rid {on("workspace_id")}
                   LIMIT 1) h
          WHERE r.ws = ANY(limited)
        UNION
        SELECT h.workspace_id, h.actor_id FROM holds h
          WHERE h.workspace_id = ANY(sweep) AND h.workspace_id = ANY(limited)
            AND h.state = 1 AND h.expires_at <= at {on("h.workspace_id")}
      ) k,
      LATERAL (SELECT * FROM member_spend WHERE workspace_id = k.ws AND actor_id = k.actor
               {on("workspace_id")} LIMIT 1) s;
  END IF;
  IF topped IS NOT NULL THEN
    SELECT json_agg({_row("t", TOPUP)}) INTO topups FROM auto_topups t
      WHERE t.workspace_id = ANY(topped) {on("t.workspace_id")};
  END IF;"""


def _lock(mode: str) -> str:
    return f"""
    SELECT array_agg(w.workspace_id), json_agg({_row("w", WORKSPACE)}),
        array_agg(w.workspace_id) FILTER (WHERE w.member_limits),
        array_agg(w.workspace_id) FILTER (WHERE w.auto_topup)
      INTO locked, workspaces, limited, topped FROM (
        SELECT * FROM workspaces WHERE workspace_id = ANY(ids)
        ORDER BY workspace_id FOR UPDATE{mode}) w;"""


LOAD = f"""
CREATE FUNCTION meter_load(
  ids text[], create_ids text[], hold_ws text[], hold_rids text[], entry_ws text[],
  entry_rids text[], sweep text[], skip_locked boolean, actor_ws text[], actor_ids text[],
  lot_ws text[], lot_rids text[], at timestamptz, shard bigint
) RETURNS json
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_hashjoin = off
SET enable_mergejoin = off SET enable_material = off SET enable_indexscan = on
SET enable_nestloop = on
AS $$
DECLARE
  locked text[];
  limited text[];
  topped text[];
  workspaces json;
  holds json;
  overdue json;
  lots json;
  entries json;
  limits json;
  spend json;
  topups json;
  by_rid json;
BEGIN
  IF cardinality(create_ids) > 0 THEN
    INSERT INTO workspaces (workspace_id) SELECT unnest(create_ids) ORDER BY 1
      ON CONFLICT DO NOTHING;
  END IF;
  -- Workspaces are locked once each, in workspace_id order: every writer takes them in that
  -- order, so batches cannot deadlock.
  IF skip_locked THEN{_lock(" SKIP LOCKED")}
  ELSE{_lock("")}
  END IF;
  IF locked IS NULL THEN
    RETURN json_build_array(at, '[]'::json, '[]'::json, '[]'::json, '[]'::json, '[]'::json,
      '[]'::json, '[]'::json, '[]'::json, '[]'::json);
  END IF;
  IF shard = 0 THEN{_reads("")}
  ELSE
    -- Citus: the lock above held the shard's placement still; a batch that reached a node
    -- its shard has left writes nothing here, and runs again where the shard now is.
    IF NOT EXISTS (SELECT FROM pg_dist_placement p JOIN pg_dist_local_group g USING (groupid)
                   WHERE p.shardid = shard) THEN
      RAISE EXCEPTION 'shard % is not on this node', shard USING ERRCODE = 'MTR02';
    END IF;{_reads("AND $ = ANY(locked)")}
  END IF;
  RETURN json_build_array(at, workspaces,
    coalesce(holds, '[]'::json), coalesce(overdue, '[]'::json),
    coalesce(lots, '[]'::json), coalesce(entries, '[]'::json),
    coalesce(by_rid, '[]'::json), coalesce(limits, '[]'::json),
    coalesce(spend, '[]'::json), coalesce(topups, '[]'::json));
END $$;
"""

# A batch's events take the next positions of its shard group's feed: the group's row of
# feed_heads is moved on by their number and stays locked until the batch commits, so the
# next writer's positions follow and none is visible before the ones before it. A function of
# its own (called in the batch's write message): on Citus, with the feed key a constant in
# both statements, they are router statements on the group's own node.
EVENTS = """
CREATE FUNCTION meter_events(
  k text, ws text[], seqs bigint[], types text[], times timestamptz[], docs text[]
) RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  n bigint := cardinality(ws);
  head bigint;
BEGIN
  INSERT INTO feed_heads AS f (feed_key, pos) VALUES (k, n)
    ON CONFLICT (feed_key) DO UPDATE SET pos = f.pos + EXCLUDED.pos RETURNING f.pos INTO head;
  INSERT INTO events (workspace_id, sequence, type, created_at, data, feed_key, feed_pos)
    SELECT u.w, u.s, u.t, u.c, u.d::jsonb, k, head - n + u.o
      FROM unnest(ws, seqs, types, times, docs) WITH ORDINALITY AS u(w, s, t, c, d, o);
END $$;
"""

INT8S = """
CREATE FUNCTION meter_int8s(text) RETURNS int8[] LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS 'SELECT $1::int8[]'
"""


def upgrade() -> None:
    # The feed: a position per shard group, from its head.
    op.execute(
        """
        ALTER TABLE events ADD COLUMN feed_key text NOT NULL DEFAULT '',
                           ADD COLUMN feed_pos bigint;
        UPDATE events e SET feed_pos = o.n FROM (
          SELECT workspace_id, sequence,
                 row_number() OVER (ORDER BY txid, workspace_id, sequence) AS n
            FROM events) o
         WHERE e.workspace_id = o.workspace_id AND e.sequence = o.sequence;
        ALTER TABLE events ALTER COLUMN feed_pos SET NOT NULL;
        ALTER TABLE events DROP CONSTRAINT pk_events;
        ALTER TABLE events ADD CONSTRAINT pk_events
          PRIMARY KEY (feed_key, workspace_id, sequence);
        CREATE UNIQUE INDEX ix_events_position ON events (feed_key, feed_pos);
        DROP INDEX ix_events_workspace_feed;
        CREATE TABLE feed_heads (
          feed_key text NOT NULL,
          pos bigint NOT NULL,
          CONSTRAINT pk_feed_heads PRIMARY KEY (feed_key)
        );
        INSERT INTO feed_heads SELECT '', max(feed_pos) FROM events HAVING count(*) > 0;
        """
    )
    # Webhooks: deliveries and attempts by shard group, fan-out positions per group.
    op.execute(
        """
        CREATE TABLE webhook_cursors (
          feed_key text NOT NULL,
          endpoint_id text NOT NULL,
          pos bigint NOT NULL,
          CONSTRAINT pk_webhook_cursors PRIMARY KEY (feed_key, endpoint_id)
        );
        INSERT INTO webhook_cursors (feed_key, endpoint_id, pos)
        SELECT '', w.endpoint_id, coalesce((
            SELECT max(e.feed_pos) FROM events e
             WHERE (e.txid, e.workspace_id, e.sequence)
                <= (w.feed_txid, w.feed_workspace_id, w.feed_sequence)), 0)
          FROM webhook_endpoints w;
        ALTER TABLE webhook_endpoints DROP COLUMN feed_txid, DROP COLUMN feed_workspace_id,
          DROP COLUMN feed_sequence;
        ALTER TABLE webhook_deliveries ADD COLUMN feed_key text NOT NULL DEFAULT '';
        ALTER TABLE webhook_deliveries DROP CONSTRAINT pk_webhook_deliveries;
        ALTER TABLE webhook_deliveries ADD CONSTRAINT pk_webhook_deliveries
          PRIMARY KEY (feed_key, delivery_id);
        DROP INDEX ix_webhook_deliveries_due;
        CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries
          (feed_key, endpoint_id, next_attempt_at) WHERE state = 0;
        ALTER TABLE webhook_attempts ADD COLUMN feed_key text NOT NULL DEFAULT '';
        ALTER TABLE webhook_attempts DROP CONSTRAINT pk_webhook_attempts;
        ALTER TABLE webhook_attempts ADD CONSTRAINT pk_webhook_attempts
          PRIMARY KEY (feed_key, delivery_id, attempt);
        """
    )
    op.execute(f"DROP FUNCTION meter_load({OLD_SIGNATURE})")
    op.execute(LOAD)
    op.execute(EVENTS)
    op.execute(INT8S)


def downgrade() -> None:
    raise NotImplementedError("0009 numbers the feed anew; restore a backup to go back")
