"""Two identical requests in one batch: the second replays the first (DESIGN.md §3).

The batcher may put both in one transaction, where the first's entry is not yet stored: the
Book must find it among its own new entries, or the second would be refused or applied twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

from meter.ledger.book import Book
from meter.ledger.commands import ConfirmGrantCmd, GrantCmd
from meter.ledger.model import Account, Level

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def _book() -> Book:
    account = Account("ws", 0, 0, 0, 0, 100, 10, Level.CRITICAL, 0, 0, 0, 0, None)
    return Book(account, [], {}, {}, NOW)


def _grant(pending: bool) -> GrantCmd:
    return GrantCmd("ws", "pay-1", 40, None, "purchase", "", "", {}, "fp", pending=pending)


def test_a_grant_twice_in_one_book_grants_once_and_answers_alike() -> None:
    book = _book()
    first, second = book.grant(_grant(False)), book.grant(_grant(False))
    assert first.entry == second.entry
    assert (1, 40) == (len(book.new_lots), book.account.available)


def test_a_pending_grant_and_its_confirmation_twice_in_one_book_take_effect_once() -> None:
    book = _book()
    book.grant(_grant(True))
    assert book.grant(_grant(True)).lot is book.new_lots[0]
    confirm = ConfirmGrantCmd("ws", "pay-1", "")
    done, again = book.confirm_grant(confirm), book.confirm_grant(confirm)
    assert done.entry is not None
    assert done.entry == again.entry
    assert (1, 40) == (len(book.entries), book.account.available)
