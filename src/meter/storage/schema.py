"""What every table of the schema shares: one MetaData, its naming convention, column helpers.

The tables themselves are in meter.storage.tables (the ledger's and the reference tables) and
meter.storage.event_tables (the events outbox and its webhook deliveries); importing
meter.storage.tables brings in both, so its `metadata` is the whole schema.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, text

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
