"""The events outbox and webhook deliveries (DESIGN.md §9).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

* events: one row per notable change, written in the change's own transaction (on the batch
  path, one more part of the batch's write statement). Each row records its transaction id,
  so that a feed (ListEvents, the dispatcher's fan-out) reads only events below the oldest
  transaction still running and never passes over one that commits late.
* workspaces.event_seq numbers a workspace's events; global events (workspace '') take
  theirs from a sequence. workspaces.next_notice_at and lots.expiring_noticed drive the
  once-per-lot credits.expiring event.
* webhook_endpoints, webhook_deliveries (one attempt chain per event and endpoint),
  webhook_attempts (the delivery log) and webhook_replays.
* meter_load is 0004's, reading the new columns.
"""

import runpy
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_0004 = runpy.run_path(str(Path(__file__).with_name("0004_keyed_statements.py")))


def _load(workspace: str, lot: str) -> str:
    """0004's meter_load with other workspace and lot column lists."""
    row = _0004["_row"]
    load: str = _0004["LOAD"]
    return load.replace(row("w", _0004["WORKSPACE"]), row("w", workspace)).replace(
        row("l", _0004["LOT"]), row("l", lot)
    )


# In meter.storage.tables' order (ledger_sql.account reads the row by position).
WORKSPACE = (
    "workspace_id, balance, held, lifetime_used, lifetime_granted, low_threshold,"
    " critical_threshold, alert_level, hold_seq, lot_seq, entry_seq, alert_seq, event_seq,"
    " next_expiry_at, next_notice_at, last_entry_at, last_entry_kind, last_entry_amount,"
    " last_entry_operation, created_at"
)
LOT = _0004["LOT"] + ", expiring_noticed"


def _ts(name: str, nullable: bool = False, default: str | None = None) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.text(default) if default else None,
    )


def upgrade() -> None:
    op.add_column(
        "workspaces", sa.Column("event_seq", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column("workspaces", _ts("next_notice_at", nullable=True))
    op.add_column(
        "lots",
        sa.Column("expiring_noticed", sa.Boolean(), server_default="false", nullable=False),
    )
    op.execute("CREATE SEQUENCE event_global_seq")
    op.execute("CREATE SEQUENCE webhook_delivery_ids")
    op.execute(
        """
        CREATE TABLE events (
          workspace_id text NOT NULL,
          sequence bigint NOT NULL,
          type text NOT NULL,
          created_at timestamptz NOT NULL,
          data jsonb NOT NULL,
          txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
          CONSTRAINT pk_events PRIMARY KEY (workspace_id, sequence)
        );
        CREATE INDEX ix_events_feed ON events (txid, workspace_id, sequence);
        CREATE INDEX ix_events_workspace_feed ON events (workspace_id, txid, sequence);
        CREATE INDEX ix_events_created_at ON events (created_at);
        CREATE TABLE webhook_endpoints (
          endpoint_id text NOT NULL,
          url text NOT NULL,
          description text NOT NULL DEFAULT '',
          event_types text[] NOT NULL DEFAULT '{}',
          workspace_ids text[] NOT NULL DEFAULT '{}',
          enabled boolean NOT NULL DEFAULT true,
          secret text NOT NULL,
          previous_secret text,
          previous_until timestamptz,
          feed_txid xid8 NOT NULL,
          feed_workspace_id text NOT NULL DEFAULT '',
          feed_sequence bigint NOT NULL DEFAULT 0,
          failing_since timestamptz,
          disabled_reason text NOT NULL DEFAULT '',
          request_id text,
          fingerprint text NOT NULL DEFAULT '',
          rotate_request_id text,
          created_at timestamptz NOT NULL DEFAULT now(),
          updated_at timestamptz NOT NULL DEFAULT now(),
          CONSTRAINT pk_webhook_endpoints PRIMARY KEY (endpoint_id),
          CONSTRAINT uq_webhook_endpoints_request_id UNIQUE (request_id)
        );
        CREATE TABLE webhook_deliveries (
          workspace_id text NOT NULL,
          delivery_id bigint NOT NULL DEFAULT nextval('webhook_delivery_ids'),
          sequence bigint NOT NULL,
          endpoint_id text NOT NULL,
          state smallint NOT NULL DEFAULT 0,
          attempts integer NOT NULL DEFAULT 0,
          next_attempt_at timestamptz NOT NULL DEFAULT now(),
          created_at timestamptz NOT NULL DEFAULT now(),
          finished_at timestamptz,
          replay boolean NOT NULL DEFAULT false,
          CONSTRAINT pk_webhook_deliveries PRIMARY KEY (workspace_id, delivery_id)
        );
        CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at)
          WHERE state = 0;
        CREATE INDEX ix_webhook_deliveries_endpoint
          ON webhook_deliveries (endpoint_id, delivery_id);
        CREATE INDEX ix_webhook_deliveries_event
          ON webhook_deliveries (workspace_id, sequence);
        CREATE TABLE webhook_attempts (
          workspace_id text NOT NULL,
          delivery_id bigint NOT NULL,
          attempt integer NOT NULL,
          endpoint_id text NOT NULL,
          event_id text NOT NULL,
          event_type text NOT NULL,
          attempted_at timestamptz NOT NULL,
          status integer NOT NULL DEFAULT 0,
          error text NOT NULL DEFAULT '',
          latency_ms integer NOT NULL DEFAULT 0,
          next_attempt_at timestamptz,
          CONSTRAINT pk_webhook_attempts PRIMARY KEY (workspace_id, delivery_id, attempt)
        );
        CREATE INDEX ix_webhook_attempts_endpoint
          ON webhook_attempts (endpoint_id, delivery_id, attempt);
        CREATE INDEX ix_webhook_attempts_event ON webhook_attempts (event_id);
        CREATE TABLE webhook_replays (
          endpoint_id text NOT NULL,
          request_id text NOT NULL,
          fingerprint text NOT NULL,
          queued integer NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now(),
          CONSTRAINT pk_webhook_replays PRIMARY KEY (endpoint_id, request_id)
        );
        """
    )
    op.execute(_load(WORKSPACE, LOT))


def downgrade() -> None:
    op.execute(_0004["LOAD"])
    op.execute(
        "DROP TABLE webhook_replays, webhook_attempts, webhook_deliveries, webhook_endpoints,"
        " events; DROP SEQUENCE webhook_delivery_ids, event_global_seq"
    )
    op.drop_column("lots", "expiring_noticed")
    op.drop_column("workspaces", "next_notice_at")
    op.drop_column("workspaces", "event_seq")
