"""The journal in creation order across workspaces, for ExportJournal (DESIGN.md §16).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08

ExportJournal pages through every workspace's entries by (created_at, workspace_id, entry_id)
and resumes after the last key it answered: this index serves each page as a range scan from
the cursor, however long the journal. It is one more index entry per journal row that the
ledger writes (README's Export section has what that costs a batch). On Citus the index is
created on every shard of the distributed journal. Built without CONCURRENTLY, like the rest
of the schema: on a large journal, `meter migrate` holds writes to it while it builds.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_journal_created", "journal", ["created_at", "workspace_id", "entry_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_journal_created", table_name="journal")
