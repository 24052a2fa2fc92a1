"""What every table of the schema shares: one MetaData, its naming convention, column helpers.

The tables themselves are in meter.storage.tables (the ledger's and the reference tables) and
meter.storage.event_tables (the events outbox and its webhook deliveries); importing
meter.storage.tables brings in both, so its `metadata` is the whole schema.

The helpers return a fresh Column each call (a Column belongs to one table): the kinds of
column many tables declare alike, so each is spelled, and its defaults chosen, once.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, MetaData, Text, text

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

NOW = text("now()")


def ts(name: str, nullable: bool = False, **kw: object) -> Column[object]:
    """A timestamp with time zone, NOT NULL unless told otherwise."""
    return Column(name, DateTime(timezone=True), nullable=nullable, **kw)  # type: ignore[arg-type]


def created_at() -> Column[object]:
    """created_at, set by the database when the row is inserted."""
    return ts("created_at", server_default=NOW)


def updated_at() -> Column[object]:
    """updated_at, now() when the row is inserted; its writers set it as they change it."""
    return ts("updated_at", server_default=NOW)


def workspace_id() -> Column[str]:
    """workspace_id TEXT NOT NULL: first in the primary key of every table that grows with
    use, so the schema can be distributed by it (DESIGN.md §8)."""
    return Column("workspace_id", Text, nullable=False)


def zeroed(name: str) -> Column[int]:
    """A BIGINT NOT NULL that is 0 until written: a running total, a sequence's last value, or
    an amount that may go unsaid."""
    return Column(name, BigInteger, nullable=False, server_default="0")


def flag(name: str, default: bool = False) -> Column[bool]:
    """A BOOLEAN NOT NULL with a default (false unless told)."""
    return Column(name, Boolean, nullable=False, server_default="true" if default else "false")


def text_or_empty(name: str) -> Column[str]:
    """A TEXT NOT NULL that is '' when not given (never NULL: '' and absent are one)."""
    return Column(name, Text, nullable=False, server_default="")
