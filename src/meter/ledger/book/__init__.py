"""A workspace's book: the rules that turn commands into holds, lot draws and journal entries.

A Book holds one workspace's loaded state for the length of one database transaction. Each
method checks everything it needs before it changes anything, so a refused command leaves the
book exactly as it found it and its neighbours in the same batch are unaffected. Storage
loads a Book, the methods run in memory, and storage writes back what changed.

Each rule has its module: holds.py (reserve, commit, release, extend, charge), lots.py (burn
order: draws and give-backs), expiry.py, grants.py (pending grants too), corrections.py
(adjustments, refunds), alerts.py, topup.py, budgets.py (budgets, member limits among them);
state.py holds the state they share and writes the records (entries, events, alerts, new
lots) they all add.
"""

from __future__ import annotations

from meter.ledger.book.alerts import AlertRules
from meter.ledger.book.budgets import BudgetRules
from meter.ledger.book.corrections import CorrectionRules
from meter.ledger.book.expiry import ExpiryRules
from meter.ledger.book.grants import GrantRules
from meter.ledger.book.holds import HoldRules, Pricer
from meter.ledger.book.lots import LotRules
from meter.ledger.book.runway import RunwayRules
from meter.ledger.book.topup import TopUpRules

__all__ = ["Book", "Pricer"]


class Book(
    HoldRules,
    LotRules,
    ExpiryRules,
    GrantRules,
    CorrectionRules,
    AlertRules,
    TopUpRules,
    RunwayRules,
    BudgetRules,
):
    """One workspace's state inside one transaction, and the rules that change it."""

    __slots__ = ()
