"""The hot path reads and writes with keyed, set-based statements: the JSON batch functions go.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

meter_load and meter_write (0002) exchanged a batch's rows as JSON documents: PostgreSQL
built and parsed a document of every row a batch touched, and the plans of their queries,
cached inside the functions while the tables were small, went on scanning them as they
grew. The statements of meter.storage.ledger_sql replace them: prepared once per
connection, with one binary array parameter per column, on plans pinned to index lookups.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS meter_write(jsonb), meter_load(jsonb)")


def downgrade() -> None:
    import runpy
    from pathlib import Path

    batch = runpy.run_path(str(Path(__file__).with_name("0002_batch_functions.py")))
    op.execute(batch["LOAD"])
    op.execute(batch["WRITE"])
