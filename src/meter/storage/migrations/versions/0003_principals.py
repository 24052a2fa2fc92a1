"""Principals: calling services, their roles, workspaces and token hashes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column(
            "id",
            postgresql.UUID(as_uuid=False),
            server_default=sa.text("gen_random_uuid()"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("workspaces", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("cert_subject", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('worker', 'planner', 'app', 'billing', 'admin')",
            name=op.f("ck_principals_known_role"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_principals")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_principals_token_hash")),
    )
    op.create_index(
        "ix_principals_active_name",
        "principals",
        ["name"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_index(
        "ix_principals_active_subject",
        "principals",
        ["cert_subject"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL AND cert_subject IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_principals_active_subject", table_name="principals")
    op.drop_index("ix_principals_active_name", table_name="principals")
    op.drop_table("principals")
