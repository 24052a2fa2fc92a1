"""The schema, as SQLAlchemy Core tables: the one description migrations and queries share.

Here are the ledger's tables and the reference tables; the events outbox and its webhook
tables are in meter.storage.event_tables, and importing this module brings them in too, so
`metadata` (from meter.storage.schema) is the whole schema. Every table that grows with use
has workspace_id first in its primary key, and no constraint relates two workspaces
(DESIGN.md §8): the schema can be distributed by workspace_id.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

# Importing the events outbox's tables puts them in `metadata` too: whoever reads the whole
# schema from here (migrations/env.py) finds every table in it.
from meter.storage import event_tables  # noqa: F401
from meter.storage.schema import (
    created_at,
    flag,
    text_or_empty,
    ts,
    updated_at,
    workspace_id,
    zeroed,
)
from meter.storage.schema import metadata as metadata

workspaces = Table(
    "workspaces",
    metadata,
    Column("workspace_id", Text, primary_key=True),
    # available + held; the journal sums to it.
    zeroed("balance"),
    zeroed("held"),
    zeroed("lifetime_used"),
    zeroed("lifetime_granted"),
    Column("low_threshold", BigInteger, nullable=False, server_default="100"),
    Column("critical_threshold", BigInteger, nullable=False, server_default="10"),
    # The worst balance notice sent since available was last at or above the low threshold
    # (1 none, 2 LOW, 3 CRITICAL): balance.recovered ends a dip that was notified.
    Column("alert_level", SmallInteger, nullable=False, server_default="1"),
    # Per-workspace id counters: ids are dense, ordered by commit, and assigned without a
    # round trip (the row is locked by every writer anyway).
    zeroed("hold_seq"),
    zeroed("lot_seq"),
    zeroed("entry_seq"),
    zeroed("alert_seq"),
    # The events outbox's (DESIGN.md §9): the last event's sequence.
    zeroed("event_seq"),
    # The earliest expiry among lots with credits left: writers expire lots lazily past it.
    ts("next_expiry_at", nullable=True),
    # When the next lot's credits.expiring event is due (sent lazily past it, like expiry).
    ts("next_notice_at", nullable=True),
    ts("last_entry_at", nullable=True),
    Column("last_entry_kind", SmallInteger, nullable=True),
    zeroed("last_entry_amount"),
    text_or_empty("last_entry_operation"),
    # The workspace has budgets (member limits among them) / an auto top-up rule.
    flag("budgets"),
    flag("auto_topup"),
    created_at(),
    updated_at(),
    # The runway (DESIGN.md §13): balance.runway_low's threshold in days (0: none), credits
    # charged less refunds per UTC day (the newest first, 31 days; burn_day is the newest's
    # date), and whether that notice was sent for the current dip.
    Column("runway_days", SmallInteger, nullable=False, server_default="7"),
    Column("burn", ARRAY(BigInteger), nullable=False, server_default="{}"),
    Column("burn_day", Date, nullable=True),
    flag("runway_low"),
    CheckConstraint("held >= 0", name="held_not_negative"),
    CheckConstraint("balance >= held", name="available_not_negative"),
    CheckConstraint("critical_threshold >= 0 AND low_threshold >= 0", name="thresholds"),
)

lots = Table(
    "lots",
    metadata,
    workspace_id(),
    Column("lot_id", BigInteger, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    # Neither spent, held nor expired.
    Column("remaining", BigInteger, nullable=False),
    ts("expires_at", nullable=True),
    text_or_empty("source"),
    text_or_empty("package"),
    created_at(),
    # Its credits.expiring event was written (once per lot).
    flag("expiring_noticed"),
    # DESIGN.md §10: 1 paid, 2 promotional, 3 manual; burn order priority first (lower first).
    Column("category", SmallInteger, nullable=False, server_default="1"),
    Column("priority", SmallInteger, nullable=False, server_default="50"),
    # 0 active, 1 pending (not spendable, not in the balance), 2 confirmed, 3 voided.
    Column("state", SmallInteger, nullable=False, server_default="0"),
    # A pending grant's request digest: its replays find the lot, not a journal entry.
    text_or_empty("fingerprint"),
    PrimaryKeyConstraint("workspace_id", "lot_id"),
    Index("ix_lots_request", "workspace_id", "request_id"),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_in_range"),
)

holds = Table(
    "holds",
    metadata,
    workspace_id(),
    Column("hold_id", BigInteger, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("kind", SmallInteger, nullable=False),  # 1 reserve, 2 charge
    Column("state", SmallInteger, nullable=False),  # HoldState
    Column("amount", BigInteger, nullable=False),
    zeroed("charged"),
    zeroed("shortfall"),
    zeroed("refunded"),
    flag("late"),
    text_or_empty("operation"),
    Column("catalog_version", Integer, nullable=False),
    text_or_empty("actor_id"),
    Column("labels", JSONB, nullable=True),
    # Which lots the credits came from: held credits while HELD, charged ones once COMMITTED.
    Column("draw_lots", ARRAY(BigInteger), nullable=False),
    Column("draw_amounts", ARRAY(BigInteger), nullable=False),
    # Digests of the request parameters, for replays and REQUEST_ID_REUSED.
    Column("fingerprint", Text, nullable=False),
    text_or_empty("commit_fingerprint"),
    ts("expires_at"),
    ts("created_at"),
    ts("finished_at", nullable=True),
    PrimaryKeyConstraint("workspace_id", "hold_id"),
    UniqueConstraint("workspace_id", "request_id"),
    CheckConstraint("amount >= 0 AND charged >= 0 AND shortfall >= 0", name="amounts"),
    CheckConstraint("refunded >= 0 AND refunded <= charged", name="refunds_within_charge"),
    # The sweeper's way in: overdue holds across workspaces.
    Index("ix_holds_held_expires_at", "expires_at", postgresql_where=text("state = 1")),
)

journal = Table(
    "journal",
    metadata,
    workspace_id(),
    Column("entry_id", BigInteger, nullable=False),
    Column("kind", SmallInteger, nullable=False),  # EntryKind
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    text_or_empty("operation"),
    text_or_empty("actor_id"),
    text_or_empty("request_id"),
    Column("labels", JSONB, nullable=True),
    zeroed("shortfall"),
    flag("late"),
    text_or_empty("reason"),
    text_or_empty("package"),
    text_or_empty("fingerprint"),
    ts("created_at"),
    # The category of the lots the entry moved, when they share one (0: several or none).
    Column("category", SmallInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("workspace_id", "entry_id"),
    CheckConstraint("balance_after >= 0", name="balance_not_negative"),
    # GrantCredits, AdjustCredits and Refund are idempotent on their own request ids.
    Index(
        "uq_journal_request",
        "workspace_id",
        "request_id",
        unique=True,
        postgresql_where=text("kind IN (1, 4, 5)"),
    ),
    Index("ix_journal_workspace_created", "workspace_id", "created_at"),
    # ExportJournal's order across workspaces (migration 0011).
    Index("ix_journal_created", "created_at", "workspace_id", "entry_id"),
)

# Budgets (DESIGN.md §13): spend limits for a scope (actor_id or a label key; scope_value ''
# is every value of the key on its own) and period (1 day, 2 week, 3 month, 4 total). Member
# limits are budgets of the actor_id key (meter.ledger.budgets).
budgets = Table(
    "budgets",
    metadata,
    workspace_id(),
    Column("budget_id", Text, nullable=False),
    Column("scope_key", Text, nullable=False),
    text_or_empty("scope_value"),
    Column("period", SmallInteger, nullable=False),  # Period
    Column("credit_limit", BigInteger, nullable=False),
    Column("warn_at", ARRAY(SmallInteger), nullable=False, server_default="{80}"),
    flag("enabled", default=True),
    updated_at(),
    PrimaryKeyConstraint("workspace_id", "budget_id"),
    CheckConstraint("credit_limit >= 0", name="limit"),
)

# Each budget's spend per value: what its scope holds now and was charged in the period that
# starts at period_start; `warned` has bit i once warn_at[i] was crossed in that period,
# `exceeded` once a refusal's event was written in it.
budget_spend = Table(
    "budget_spend",
    metadata,
    workspace_id(),
    Column("budget_id", Text, nullable=False),
    Column("scope_value", Text, nullable=False),
    zeroed("held"),
    zeroed("used"),
    ts("period_start"),
    Column("warned", SmallInteger, nullable=False, server_default="0"),
    flag("exceeded"),
    PrimaryKeyConstraint("workspace_id", "budget_id", "scope_value"),
)

# A workspace's auto top-up rule and its state (DESIGN.md §10).
auto_topups = Table(
    "auto_topups",
    metadata,
    workspace_id(),
    Column("enabled", Boolean, nullable=False),
    Column("threshold", BigInteger, nullable=False),
    text_or_empty("package"),
    zeroed("amount"),
    Column("monthly_limit", Integer, nullable=False),
    Column("failures", Integer, nullable=False, server_default="0"),  # in a row
    zeroed("seq"),  # n of topup:<ws>:<n>
    text_or_empty("outstanding"),  # its request id
    ts("requested_at", nullable=True),
    ts("month_start", nullable=True),
    Column("month_count", Integer, nullable=False, server_default="0"),
    text_or_empty("last_failed"),
    PrimaryKeyConstraint("workspace_id"),
)

alerts = Table(
    "alerts",
    metadata,
    workspace_id(),
    Column("event_id", BigInteger, nullable=False),
    Column("kind", SmallInteger, nullable=False),  # AlertKind
    Column("available", BigInteger, nullable=False),
    Column("threshold", BigInteger, nullable=False),
    zeroed("required"),
    text_or_empty("operation"),
    text_or_empty("request_id"),
    ts("created_at"),
    PrimaryKeyConstraint("workspace_id", "event_id"),
)

# Reference tables (small, replicated on every node under Citus).

catalog_versions = Table(
    "catalog_versions",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("rules", JSONB, nullable=False),
    text_or_empty("description"),
    Column("request_id", Text, nullable=True, unique=True),
    text_or_empty("fingerprint"),
    created_at(),
)

packages = Table(
    "packages",
    metadata,
    Column("name", Text, primary_key=True),
    Column("credits", BigInteger, nullable=False),
    Column("price_cents", BigInteger, nullable=False),
    Column("currency", Text, nullable=False, server_default="USD"),
    Column("position", Integer, nullable=False),
    CheckConstraint("credits > 0 AND price_cents >= 0", name="positive"),
)

# Calling services and their tokens (DESIGN.md §6); a reference table, one row per principal.
principals = Table(
    "principals",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    # Empty: every workspace.
    Column("workspaces", ARRAY(Text), nullable=False, server_default="{}"),
    # Hex SHA-256 of the token; the token itself is never stored.
    Column("token_hash", Text, nullable=False, unique=True),
    Column("cert_subject", Text, nullable=True),
    created_at(),
    ts("revoked_at", nullable=True),
    CheckConstraint("role IN ('worker', 'planner', 'app', 'billing', 'admin')", name="known_role"),
    # One active principal per name and per certificate subject; revoked ones keep theirs.
    Index(
        "ix_principals_active_name",
        "name",
        unique=True,
        postgresql_where=text("revoked_at IS NULL"),
    ),
    Index(
        "ix_principals_active_subject",
        "cert_subject",
        unique=True,
        postgresql_where=text("revoked_at IS NULL AND cert_subject IS NOT NULL"),
    ),
)
