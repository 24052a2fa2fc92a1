"""meter_load reads the ledger's time from its caller instead of taking now() itself.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08

The ledger's time is the database's now() shifted by meter.ledger.clock (tests move it across
days, months and expiries). meter_load chose overdue holds by now() alone, so with the clock
moved the sweeper expired nothing that the rules held to be overdue. It now takes the ledger's
time as its last argument (its caller passes now() plus the shift) and returns it.
"""

import runpy
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_0006 = runpy.run_path(str(Path(__file__).with_name("0006_credit_policies.py")))
SIGNATURE = (
    "text[], text[], text[], text[], text[], text[], text[], boolean, text[], text[], text[],"
    " text[]"
)


def load() -> str:
    """0006's meter_load with the ledger's time as an argument, `at`."""
    text: str = _0006["LOAD"]
    head, body = text.split("AS $$", 1)
    head = head.replace(
        "lot_ws text[], lot_rids text[]\n)", "lot_ws text[], lot_rids text[],\n  at timestamptz\n)"
    )
    return head + "AS $$" + body.replace("now()", "at")


def upgrade() -> None:
    op.execute(f"DROP FUNCTION meter_load({SIGNATURE})")
    op.execute(load())


def downgrade() -> None:
    op.execute(f"DROP FUNCTION meter_load({SIGNATURE}, timestamptz)")
    op.execute(_0006["LOAD"])
