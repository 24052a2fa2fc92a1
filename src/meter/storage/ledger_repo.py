"""The ledger's storage: load workspaces' books, let the rules run, write back what changed.

One call of `apply` is one transaction for a whole batch of commands, whatever their
workspaces, in two round trips to PostgreSQL: "BEGIN; SELECT meter_load(...)" locks the
workspace rows once each, in workspace_id order (every writer takes them in that order, so
batches cannot deadlock), and returns the state the commands need; then
"SELECT meter_write(...); COMMIT" writes every change, one set-based statement per table
(the functions are in migration 0002; the documents they exchange in ledger_sql).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from meter import errors
from meter.ledger.book import Book, Pricer
from meter.ledger.model import (
    AdjustCmd,
    ChargeCmd,
    Command,
    CommitCmd,
    Entry,
    ExtendCmd,
    GrantCmd,
    Hold,
    Lot,
    Outcome,
    RefundCmd,
    ReleaseCmd,
    ReserveCmd,
    SetThresholdsCmd,
    SweepCmd,
    SweepOutcome,
)
from meter.storage import ledger_sql as sql
from meter.storage.db import translated

Result = Outcome | errors.MeterError


class LedgerRepo:
    """Applies batches of ledger commands, one transaction per batch."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        committed: Callable[[Iterable[str], Iterable[tuple[int, str]]], None] | None = None,
    ) -> None:
        """`committed` hears, after each commit, the workspaces changed and alerts added."""
        self.pool = pool
        self.committed = committed

    async def apply(
        self,
        cmds: Sequence[Command],
        price: Pricer,
        *,
        skip_locked: bool = False,
        prepare: Callable[[set[int]], Any] | None = None,
    ) -> list[Result]:
        """Run commands in one transaction; each gets its outcome or its own refusal.

        Args:
            cmds: commands of any workspaces, in the order they are to be applied.
            price: prices a Commit's actual usage with a hold's catalog version.
            skip_locked: skip workspaces another transaction holds (the sweeper's mode).
            prepare: awaited with the catalog versions the loaded holds use, before pricing.
        """
        try:
            with translated():
                async with self.pool.connection() as conn:
                    return await self._apply(conn, cmds, price, skip_locked, prepare)
        except errors.MeterError as e:
            if e.kind is errors.Kind.UNAVAILABLE:
                # The server may have restarted: drop every dead connection at once.
                await self.pool.check()
            raise

    async def _apply(
        self,
        conn: AsyncConnection[Any],
        cmds: Sequence[Command],
        price: Pricer,
        skip_locked: bool,
        prepare: Callable[[set[int]], Any] | None,
    ) -> list[Result]:
        # Two round trips: "BEGIN; load" and "write; COMMIT". A failure leaves the session in
        # a transaction, which the pool rolls back when the connection comes back to it.
        books = await _load(conn, cmds, skip_locked)
        if prepare is not None:
            await prepare({h.catalog_version for b in books.values() for h in b.holds.values()})
        results = [_run(books.get(cmd.workspace_id), cmd, price) for cmd in cmds]
        changed = await _write(conn, books)
        if self.committed is not None and changed:
            self.committed(
                (b.account.workspace_id for b in changed),
                ((a.event_id, b.account.workspace_id) for b in changed for a in b.alerts),
            )
        return results


async def _load(
    conn: AsyncConnection[Any], cmds: Sequence[Command], skip_locked: bool
) -> dict[str, Book]:
    """Lock the batch's workspaces and read what its commands need: one statement."""
    ws: list[str] = []
    rids: list[str] = []
    entries_needed = False
    for c in cmds:
        if isinstance(c, SweepCmd | SetThresholdsCmd):
            continue
        ws.append(c.workspace_id)
        rids.append(c.request_id)
        if isinstance(c, RefundCmd):
            ws.append(c.workspace_id)
            rids.append(c.charge_request_id)
        entries_needed = entries_needed or not isinstance(c, CommitCmd | ReleaseCmd | ExtendCmd)
    request = {
        "ids": sorted({c.workspace_id for c in cmds}),
        "create": sorted({c.workspace_id for c in cmds if isinstance(c, GrantCmd)}),
        "ws": ws,
        "rids": rids,
        "sweep": [c.workspace_id for c in cmds if isinstance(c, SweepCmd)],
        "skip_locked": skip_locked,
        "entries": entries_needed,
    }
    cur = await conn.execute(sql.load(request))
    cur.nextset()
    doc = sql.loads((await cur.fetchone())[0])  # type: ignore[index]
    now = sql.dt(doc["now"])
    ws_holds: dict[str, dict[str, Hold]] = defaultdict(dict)
    for r in doc["holds"]:
        ws_holds[r["workspace_id"]][r["request_id"]] = sql.hold(r)
    ws_lots: dict[str, list[Lot]] = defaultdict(list)
    for r in doc["lots"]:
        ws_lots[r["workspace_id"]].append(sql.lot(r))
    ws_entries: dict[str, dict[str, Entry]] = defaultdict(dict)
    for r in doc["entries"]:
        ws_entries[r["workspace_id"]][r["request_id"]] = sql.entry(r)
    books = {}
    for r in doc["workspaces"]:
        account = sql.account(r)
        wid = account.workspace_id
        book = Book(account, ws_lots[wid], ws_holds[wid], ws_entries[wid], now)
        if account.next_expiry_at is not None and account.next_expiry_at <= now:
            book.expire_lots()
        books[wid] = book
    return books


async def _write(conn: AsyncConnection[Any], books: dict[str, Book]) -> list[Book]:
    """Write every change of the batch and commit: one statement, one set-based write per
    table. Returns the books whose workspace changed."""
    doc: dict[str, list[dict[str, Any]]] = {
        "new_lots": [],
        "lots": [],
        "new_holds": [],
        "holds": [],
        "entries": [],
        "alerts": [],
        "workspaces": [],
    }
    changed = []
    for wid, book in books.items():
        book.finish()
        if not book.account_dirty and not book.dirty_holds:
            continue
        if book.account_dirty:
            changed.append(book)
        doc["new_lots"] += [sql.lot_row(wid, lt) for lt in book.new_lots]
        doc["lots"] += [
            {"workspace_id": wid, "lot_id": i, "remaining": book.lots[i].remaining}
            for i in book.dirty_lots
        ]
        doc["new_holds"] += [sql.hold_row(wid, h) for h in book.new_holds]
        doc["holds"] += [sql.hold_update_row(wid, h) for h in book.dirty_holds.values()]
        doc["entries"] += [sql.entry_row(wid, e) for e in book.entries]
        doc["alerts"] += [sql.alert_row(wid, a) for a in book.alerts]
        if book.account_dirty:
            doc["workspaces"].append(sql.workspace_row(book.account))
    await conn.execute(sql.write(doc) if doc["workspaces"] or doc["holds"] else sql.COMMIT)
    return changed


def _run(book: Book | None, cmd: Command, price: Pricer) -> Result:
    """Apply one command to its workspace's book; a refusal is its result, not an exception."""
    if book is None:
        if isinstance(cmd, SweepCmd):
            return SweepOutcome(0, 0)
        return errors.workspace_not_found(cmd.workspace_id)
    try:
        match cmd:
            case ReserveCmd():
                return book.reserve(cmd)
            case CommitCmd():
                return book.commit(cmd, price)
            case ReleaseCmd():
                return book.release(cmd)
            case ExtendCmd():
                return book.extend(cmd)
            case ChargeCmd():
                return book.charge(cmd)
            case GrantCmd():
                return book.grant(cmd)
            case AdjustCmd():
                return book.adjust(cmd)
            case RefundCmd():
                return book.refund(cmd)
            case SetThresholdsCmd():
                return book.set_thresholds(cmd)
            case SweepCmd():
                return book.sweep()
    except errors.MeterError as e:
        return e
    raise AssertionError(f"unknown command {cmd!r}")
