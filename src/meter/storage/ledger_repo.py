"""The ledger's storage: load workspaces' books, let the rules run, write back what changed.

One call of `apply` is one transaction for a whole batch of commands of one shard group
(meter.storage.shards; on plain PostgreSQL every workspace is in the one group), on the node
that holds the group, in two round trips: "BEGIN; SELECT meter_load(...)" locks the
workspace rows once each, in workspace_id order (every writer takes them in that order, so
batches cannot deadlock), and reads the state the commands need by key (migration 0009);
then "EXECUTE meter_write_N(...); COMMIT" writes every change with one prepared statement,
one set-based part per table and kind of change (the statements are in ledger_sql). Commands
of several groups (the sweeper's) are applied one group's transaction after another.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection

from meter import errors
from meter.ledger.batcher import YIELD_EVERY
from meter.ledger.book import Book, Pricer
from meter.ledger.budgets import ACTOR_KEY, Budget, Budgets, BudgetSpend
from meter.ledger.clock import Clock
from meter.ledger.commands import (
    AdjustCmd,
    ChargeCmd,
    Command,
    CommitCmd,
    ConfirmGrantCmd,
    ExtendCmd,
    GrantCmd,
    RefundCmd,
    ReleaseCmd,
    ReportTopUpFailedCmd,
    ReserveCmd,
    SetAutoTopUpCmd,
    SetThresholdsCmd,
    SweepCmd,
    VoidGrantCmd,
)
from meter.ledger.model import Entry, Hold, Lot, Outcome, SweepOutcome
from meter.storage import ledger_rows
from meter.storage import ledger_sql as sql
from meter.storage.db import translated
from meter.storage.nodes import LedgerNodes
from meter.storage.shards import ShardGroup

# How many times a batch follows its shard to another node before giving up (UNAVAILABLE).
MOVES = 3

Result = Outcome | errors.MeterError


class LedgerRepo:
    """Applies batches of ledger commands, one transaction per batch."""

    def __init__(
        self,
        nodes: LedgerNodes,
        committed: Callable[[Iterable[str], Iterable[tuple[int, str]], int], None] | None = None,
        clock: Clock | None = None,
        *,
        require_sync_standby: bool = False,
    ) -> None:
        """`committed` hears, after each commit, the workspaces changed, the alerts added and
        how many events were written. With `require_sync_standby` a batch that writes commits
        only while a synchronous standby streams (the pools' connections must have
        ledger_sql.SYNC_GUARD: db.ledger_pool(..., require_sync_standby=True))."""
        self.nodes = nodes
        self.committed = committed
        self.clock = clock or Clock()
        self.guard = require_sync_standby
        self._writers = {False: sql.Writer(), True: sql.Writer(citus=True)}

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
        groups: dict[ShardGroup, list[int]] = {}
        for i, c in enumerate(cmds):
            groups.setdefault(self.nodes.group(c.workspace_id), []).append(i)
        if len(groups) == 1:
            [group] = groups
            return await self._in_group(group, cmds, price, skip_locked, prepare)
        results: list[Result | None] = [None] * len(cmds)
        for group, places in groups.items():
            part = [cmds[i] for i in places]
            for i, r in zip(
                places, await self._in_group(group, part, price, skip_locked, prepare), strict=True
            ):
                results[i] = r
        return [r for r in results if r is not None]

    async def _in_group(
        self,
        group: ShardGroup,
        cmds: Sequence[Command],
        price: Pricer,
        skip_locked: bool,
        prepare: Callable[[set[int]], Any] | None,
    ) -> list[Result]:
        """One group's transaction, on the node that holds it; again on the node it moved to
        when it moved (meter_load refuses a shard that is not on its node: nothing written)."""
        for _ in range(MOVES):
            pool = self.nodes.pool(group)
            try:
                with translated():
                    async with pool.connection() as conn:
                        return await self._apply(conn, cmds, price, skip_locked, prepare, group)
            except errors.MeterError as e:
                if e.reason == "SHARD_MOVED":
                    await self.nodes.refresh()
                    group = self.nodes.map.by_shard(group.shard_id) or group
                    continue
                if e.kind is errors.Kind.UNAVAILABLE:
                    # The server may have restarted: drop every dead connection at once.
                    await pool.check()
                raise
        raise errors.unavailable("the workspace's shard is moving; retry", 0.5)

    async def _apply(
        self,
        conn: AsyncConnection[Any],
        cmds: Sequence[Command],
        price: Pricer,
        skip_locked: bool,
        prepare: Callable[[set[int]], Any] | None,
        group: ShardGroup,
    ) -> list[Result]:
        # Two round trips: lock and read, then write and commit. A failure leaves the session
        # in a transaction, which the pool rolls back when the connection comes back to it.
        books = await _load(conn, cmds, skip_locked, self.clock, group.shard_id)
        await asyncio.sleep(0)
        if prepare is not None:
            await prepare({h.catalog_version for b in books.values() for h in b.holds.values()})
        results = []
        for i, cmd in enumerate(cmds, 1):
            results.append(_run(books.get(cmd.workspace_id), cmd, price))
            if not i % YIELD_EVERY:
                # A big batch's rules take milliseconds of CPU: let calls waiting on the event
                # loop (a unary Reserve, a stream's next message) in between.
                await asyncio.sleep(0)
        await asyncio.sleep(0)
        writer = self._writers[self.nodes.citus]
        changed = await _write(conn, books, self.guard, writer, group.feed_key)
        if self.committed is not None and changed:
            self.committed(
                (b.account.workspace_id for b in changed),
                ((a.event_id, b.account.workspace_id) for b in changed for a in b.alerts),
                sum(len(b.events) for b in changed),
            )
        return results


async def _load(
    conn: AsyncConnection[Any],
    cmds: Sequence[Command],
    skip_locked: bool,
    clock: Clock,
    shard: int,
) -> dict[str, Book]:
    """Lock the batch's workspaces and read what its commands need: one round trip."""
    keys: dict[tuple[str, str], None] = {}  # (workspace, request id): holds to look up
    entry_keys: dict[tuple[str, str], None] = {}  # and journal entries, when a command needs them
    lot_keys: dict[tuple[str, str], None] = {}  # and lots by their grant's request id
    # The scopes (workspace, key, value) of reserves and charges, whose budgets' spend the
    # rules may check (a hold's scopes meter_load finds from the hold itself).
    scopes: dict[tuple[str, str, str], None] = {}
    create: set[str] = set()
    sweep: list[str] = []
    for c in cmds:
        if isinstance(c, SetThresholdsCmd | SetAutoTopUpCmd | ReportTopUpFailedCmd):
            continue
        if isinstance(c, SweepCmd):
            sweep.append(c.workspace_id)
            continue
        key = (c.workspace_id, c.request_id)
        keys[key] = None
        if isinstance(c, CommitCmd | ReleaseCmd | ExtendCmd):
            continue
        # A new request id must be free: no hold, no grant, adjustment or refund entry, and no
        # pending or voided grant (a lot without an entry) has it.
        entry_keys[key] = None
        lot_keys[key] = None
        if isinstance(c, ReserveCmd | ChargeCmd):
            if c.actor_id:
                scopes[(c.workspace_id, ACTOR_KEY, c.actor_id)] = None
            for k, v in c.labels.items():
                scopes[(c.workspace_id, k, v)] = None
        elif isinstance(c, GrantCmd):
            create.add(c.workspace_id)
        elif isinstance(c, RefundCmd):
            keys[(c.workspace_id, c.charge_request_id)] = None
    ids = sorted({c.workspace_id for c in cmds})
    query = sql.load(
        ids,
        sorted(create),
        list(keys),
        list(entry_keys),
        sweep,
        skip_locked,
        list(scopes),
        list(lot_keys),
        clock.sql(),
        shard,
    )
    cur = await conn.execute(query)
    cur.nextset()
    answer = await cur.fetchone()
    assert answer is not None
    (now, accounts, hold_rows, overdue, lot_rows, entry_rows, rid_lot_rows, budget_rows,
     spend_rows, topup_rows) = sql.loads(answer[0])  # fmt: skip
    now = ledger_rows.dt(now)  # the ledger's, as meter_load was given it
    ws_holds: dict[str, dict[str, Hold]] = defaultdict(dict)
    for r in hold_rows + overdue:
        ws_holds[r[0]][r[2]] = ledger_rows.hold(r)
    ws_lots: dict[str, list[Lot]] = defaultdict(list)
    seen = set()
    for r in lot_rows + rid_lot_rows:
        if (r[0], r[1]) not in seen:
            seen.add((r[0], r[1]))
            ws_lots[r[0]].append(ledger_rows.lot(r))
    spent = {
        (wid, lot_id) for wid, hs in ws_holds.items() for h in hs.values() for lot_id, _ in h.draws
    } - seen
    if spent:
        # Lots the loaded holds drew from that have no credits left: only a commit or a
        # release giving credits back to them needs these, so they cost a round trip of
        # their own instead of a wider read on every batch.
        found = await conn.execute(sql.LOTS.sql, sql.LOTS.rows(list(spent)), binary=True)
        for r in await found.fetchall():
            ws_lots[r[0]].append(ledger_rows.lot(r))
    ws_entries: dict[str, dict[str, Entry]] = defaultdict(dict)
    for r in entry_rows:
        ws_entries[r[0]][r[7]] = ledger_rows.entry(r)
    ws_budgets: dict[str, list[Budget]] = defaultdict(list)
    for r in budget_rows:
        ws_budgets[r[0]].append(ledger_rows.budget(r))
    ws_spend: dict[str, dict[tuple[str, str], BudgetSpend]] = defaultdict(dict)
    for r in spend_rows:
        s = ledger_rows.budget_spend(r)
        ws_spend[r[0]][(s.budget_id, s.value)] = s
    topups = {r[0]: ledger_rows.topup(r) for r in topup_rows}
    books = {}
    for r in accounts:
        account = ledger_rows.account(r)
        wid = account.workspace_id
        budgets = Budgets(ws_budgets[wid], ws_spend[wid]) if account.budgets else None
        book = Book(
            account, ws_lots[wid], ws_holds[wid], ws_entries[wid], now, budgets, topups.get(wid)
        )
        book.settle_due()
        book.settle()
        books[wid] = book
    return books


async def _write(
    conn: AsyncConnection[Any],
    books: dict[str, Book],
    guard: bool,
    writer: sql.Writer,
    feed_key: str,
) -> list[Book]:
    """Write every change of the batch and commit: one round trip, one prepared statement.
    Returns the books whose workspace changed."""
    new_lots: list[tuple[Any, ...]] = []
    lots: list[tuple[Any, ...]] = []
    revised: list[tuple[Any, ...]] = []
    new_holds: list[tuple[Any, ...]] = []
    holds: list[tuple[Any, ...]] = []
    entries: list[tuple[Any, ...]] = []
    alerts: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    spend: list[tuple[Any, ...]] = []
    topups: list[tuple[Any, ...]] = []
    workspaces: list[tuple[Any, ...]] = []
    changed = []
    for wid, book in books.items():
        book.finish()
        if not book.account_dirty and not book.dirty_holds:
            continue
        new_lots += [ledger_rows.lot_row(wid, lt) for lt in book.new_lots]
        if book.revised:
            for i in book.dirty_lots:
                if i in book.revised:
                    revised.append(ledger_rows.revised_lot_row(wid, book.lots[i]))
                else:
                    lots.append((wid, i, book.lots[i].remaining))
        else:
            lots += [(wid, i, book.lots[i].remaining) for i in book.dirty_lots]
        new_holds += [ledger_rows.hold_row(wid, h) for h in book.new_holds]
        holds += [ledger_rows.hold_update_row(wid, h) for h in book.dirty_holds.values()]
        entries += [ledger_rows.entry_row(wid, e) for e in book.entries]
        alerts += [ledger_rows.alert_row(wid, a) for a in book.alerts]
        events += [ledger_rows.event_row(wid, e) for e in book.events]
        if book.budgets is not None and book.budgets.dirty:
            spend += [ledger_rows.budget_spend_row(wid, s) for s in book.budgets.dirty.values()]
        if book.topup_dirty and book.topup is not None:
            topups.append(ledger_rows.topup_row(wid, book.topup))
        if book.account_dirty:
            changed.append(book)
            workspaces.append(ledger_rows.workspace_row(book.account))
    if not changed and not holds:
        await conn.execute("COMMIT")
        return changed
    rows = (
        new_lots,
        lots,
        revised,
        new_holds,
        holds,
        entries,
        alerts,
        spend,
        topups,
        workspaces,
    )
    try:
        message = writer.message(conn, rows, events=events, feed_key=feed_key, guard=guard)
        await conn.execute(message)
    except BaseException:
        writer.failed(conn)
        raise
    return changed


def _run(book: Book | None, cmd: Command, price: Pricer) -> Result:
    """Apply one command to its workspace's book; a refusal is its result, not an exception.
    Either way the command ends with the book's settle (its notices, its events' balance)."""
    if book is None:
        if isinstance(cmd, SweepCmd):
            return SweepOutcome(0, 0)
        return errors.workspace_not_found(cmd.workspace_id)
    try:
        return _apply(book, cmd, price)
    except errors.MeterError as e:
        return e
    finally:
        book.settle()


def _apply(book: Book, cmd: Command, price: Pricer) -> Outcome:
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
        case ConfirmGrantCmd():
            return book.confirm_grant(cmd)
        case VoidGrantCmd():
            return book.void_grant(cmd)
        case SetAutoTopUpCmd():
            return book.set_auto_topup(cmd)
        case ReportTopUpFailedCmd():
            return book.report_topup_failed(cmd)
    raise AssertionError(f"unknown command {cmd!r}")
