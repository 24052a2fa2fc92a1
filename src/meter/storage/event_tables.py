"""The events outbox and its webhook tables (DESIGN.md §9): endpoints, deliveries, attempts.

Events are written with the ledger change they tell of, in the same transaction; the webhook
tables are the dispatcher's and the Events API's, and no ledger statement touches them.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import UserDefinedType

from meter.storage.schema import (
    NOW,
    created_at,
    flag,
    metadata,
    text_or_empty,
    ts,
    updated_at,
    workspace_id,
)


class XID8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "xid8"


events = Table(
    "events",
    metadata,
    # '' for events about no workspace (catalog.published, webhook.endpoint_disabled).
    workspace_id(),
    Column("sequence", BigInteger, nullable=False),
    Column("type", Text, nullable=False),
    ts("created_at"),
    # The JSON object consumers act on: the balance after the change and what changed.
    Column("data", JSONB, nullable=False),
    # The writing transaction: the feed's order before positions (migration 0009), kept to
    # translate the page tokens of that order.
    Column("txid", XID8, nullable=False, server_default=text("pg_current_xact_id()")),
    # The shard group's feed key ('' on plain PostgreSQL; meter.storage.shards) and the
    # event's position in that group's feed, taken from feed_heads under its row lock.
    text_or_empty("feed_key"),
    Column("feed_pos", BigInteger, nullable=False),
    PrimaryKeyConstraint("feed_key", "workspace_id", "sequence"),
    Index("ix_events_position", "feed_key", "feed_pos", unique=True),
    Index("ix_events_feed", "txid", "workspace_id", "sequence"),
    Index("ix_events_created_at", "created_at"),
)

# Each shard group's last feed position. A writer of events locks its group's row until it
# commits, so positions become visible in order and without gaps.
feed_heads = Table(
    "feed_heads",
    metadata,
    Column("feed_key", Text, primary_key=True),
    Column("pos", BigInteger, nullable=False),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("endpoint_id", Text, primary_key=True),
    Column("url", Text, nullable=False),
    text_or_empty("description"),
    # Empty: every type, every workspace.
    Column("event_types", ARRAY(Text), nullable=False, server_default="{}"),
    Column("workspace_ids", ARRAY(Text), nullable=False, server_default="{}"),
    flag("enabled", default=True),
    # Signing secrets (whsec_...); the previous one signs too until previous_until.
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text, nullable=True),
    ts("previous_until", nullable=True),
    # Failing since this time (no 2xx since); cleared by a delivered attempt.
    ts("failing_since", nullable=True),
    text_or_empty("disabled_reason"),
    Column("request_id", Text, nullable=True, unique=True),
    text_or_empty("fingerprint"),
    Column("rotate_request_id", Text, nullable=True),
    created_at(),
    updated_at(),
)

# One chain of attempts to deliver one event to one endpoint (a replay starts another).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    text_or_empty("feed_key"),  # the event's shard group
    workspace_id(),
    Column(
        "delivery_id",
        BigInteger,
        nullable=False,
        server_default=text("nextval('webhook_delivery_ids')"),
    ),
    Column("sequence", BigInteger, nullable=False),
    Column("endpoint_id", Text, nullable=False),
    Column("state", SmallInteger, nullable=False, server_default="0"),  # 0 pending, 1 ok, 2 failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    # When the next attempt is due; while one is under way, when its lease runs out.
    ts("next_attempt_at", server_default=NOW),
    created_at(),
    ts("finished_at", nullable=True),
    flag("replay"),
    PrimaryKeyConstraint("feed_key", "delivery_id"),
    Index(
        "ix_webhook_deliveries_due",
        "feed_key",
        "endpoint_id",
        "next_attempt_at",
        postgresql_where=text("state = 0"),
    ),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "delivery_id"),
    Index("ix_webhook_deliveries_event", "workspace_id", "sequence"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    text_or_empty("feed_key"),
    workspace_id(),
    Column("delivery_id", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("endpoint_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    ts("attempted_at"),
    Column("status", Integer, nullable=False, server_default="0"),  # HTTP status, 0: none
    text_or_empty("error"),
    Column("latency_ms", Integer, nullable=False, server_default="0"),
    ts("next_attempt_at", nullable=True),
    PrimaryKeyConstraint("feed_key", "delivery_id", "attempt"),
    Index("ix_webhook_attempts_endpoint", "endpoint_id", "delivery_id", "attempt"),
    Index("ix_webhook_attempts_event", "event_id"),
)

# Where each endpoint's fan-out has got to in each shard group's feed.
webhook_cursors = Table(
    "webhook_cursors",
    metadata,
    Column("feed_key", Text, nullable=False),
    Column("endpoint_id", Text, nullable=False),
    Column("pos", BigInteger, nullable=False),
    PrimaryKeyConstraint("feed_key", "endpoint_id"),
)

# Replays keyed by their request ids (AIP-155): a retried ReplayEvents queues nothing twice.
webhook_replays = Table(
    "webhook_replays",
    metadata,
    Column("endpoint_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("queued", Integer, nullable=False),
    created_at(),
    PrimaryKeyConstraint("endpoint_id", "request_id"),
)
