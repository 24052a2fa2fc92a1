"""meter_load holds its shard group's placement until the batch commits (Citus).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08

0009's meter_load checked that the batch's shard is on the node it runs on after locking the
workspace rows. A SELECT ... FOR UPDATE does not take Citus's shard metadata lock, which
DML takes: a shard move could switch between that check and the batch's writes, and the
writes, routed by the new metadata, would then land on the new node without the row locks
(a lost update, seen under a shard move with load). meter_load now takes the shard's
metadata lock first (lock_shard_metadata, ShareLock, as Citus's own DML does), so the move's
switch waits for the batch, or the batch waits for the switch and then finds its shard gone
(MTR02) and runs again where it now is. On plain PostgreSQL (shard 0) nothing changes.
"""

import runpy
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_0010 = runpy.run_path(str(Path(__file__).with_name("0010_budgets.py")))
SIGNATURE = _0010["SIGNATURE"]
_LOCK = """
  IF shard <> 0 THEN
    -- Citus: the shard's placement stays where it is until this transaction ends (a move
    -- switches after it, or before it and MTR02 below sends the batch after the shard).
    PERFORM lock_shard_metadata(5, ARRAY[shard]);
  END IF;"""


def load() -> str:
    """0010's meter_load, taking the shard's metadata lock before anything else."""
    text: str = _0010["load"]()
    assert text.count("\nBEGIN\n") == 1, "0010's meter_load changed shape"
    text = text.replace("\nBEGIN\n", "\nBEGIN" + _LOCK + "\n", 1)
    return text.replace("CREATE FUNCTION meter_load(", "CREATE OR REPLACE FUNCTION meter_load(", 1)


def upgrade() -> None:
    op.execute(load())


def downgrade() -> None:
    op.execute(_0010["load"]().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
