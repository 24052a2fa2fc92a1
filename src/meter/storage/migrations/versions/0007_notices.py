"""Balance notices once per crossing: workspaces.alert_level is the worst notice of a dip.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

alert_level was the level last reached, and alerts fired whenever it worsened, which a Commit
met twice (its hold given back, then its charge). Notices are now decided per command from
available before and after it (meter.ledger.book.alerts), and alert_level only remembers the
worst low/critical notice sent since available was last at or above the low threshold, so
that balance.recovered follows exactly the dips that were notified. A new workspace has sent
none (1, OK); so has one that never spent, whatever level it was at.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE workspaces ALTER COLUMN alert_level SET DEFAULT 1")
    op.execute("UPDATE workspaces SET alert_level = 1 WHERE lifetime_used = 0 AND alert_level <> 1")


def downgrade() -> None:
    op.execute("ALTER TABLE workspaces ALTER COLUMN alert_level SET DEFAULT 3")
