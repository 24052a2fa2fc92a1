"""The ledger's semantics over the wire: holds, commits, releases, charges, grants, history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from meterpb.v1 import meter_pb2 as pb
from tests.support import balance, eventually, fails, grant, reserve, rid


async def _no_holds(stub, ws):
    return (await balance(stub, ws)).held == 0


def _ts(dt: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(dt)
    return t


async def test_reserve_by_operation_holds_the_catalog_maximum_for_the_usage(stub, ws):
    await grant(stub, ws, 100)
    plain = await stub.Reserve(
        pb.ReserveRequest(workspace_id=ws, request_id=rid(), operation="content.generate_post")
    )
    three_items = await stub.Reserve(
        pb.ReserveRequest(
            workspace_id=ws,
            request_id=rid(),
            operation="content.generate_post",
            usage=pb.Usage(items=3),
        )
    )
    simple = await stub.Reserve(
        pb.ReserveRequest(
            workspace_id=ws,
            request_id=rid(),
            operation="strategy.analyze",
            usage=pb.Usage(complexity=pb.COMPLEXITY_SIMPLE),
        )
    )
    assert (3, 9, 2) == (plain.hold.amount, three_items.hold.amount, simple.hold.amount)
    assert 1 <= plain.hold.catalog_version
    assert 86 == (await balance(stub, ws)).available


async def test_commit_below_the_hold_charges_the_actual_cost_and_returns_the_rest(stub, ws):
    await grant(stub, ws, 50)
    job = rid()
    await reserve(stub, ws, job, 10)
    done = await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=7))
    assert (7, 3, 0, False) == (done.charged, done.released, done.shortfall, done.late)
    assert (43, 0, 7) == (done.balance.available, done.balance.held, done.balance.lifetime_used)


async def test_commit_with_usage_prices_the_actual_usage(stub, ws):
    await grant(stub, ws, 50)
    job = rid()
    await stub.Reserve(
        pb.ReserveRequest(
            workspace_id=ws,
            request_id=job,
            operation="content.generate_post",
            usage=pb.Usage(items=2),
        )
    )
    done = await stub.Commit(
        pb.CommitRequest(
            workspace_id=ws,
            request_id=job,
            usage=pb.Usage(items=2, complexity=pb.COMPLEXITY_SIMPLE),
        )
    )
    assert (2, 4) == (done.charged, done.released)


async def test_commit_without_an_amount_charges_what_was_held(stub, ws):
    await grant(stub, ws, 20)
    job = rid()
    await reserve(stub, ws, job, 5)
    done = await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job))
    assert (5, 0) == (done.charged, done.released)


async def test_commit_above_the_hold_takes_the_excess_from_available(stub, ws):
    await grant(stub, ws, 20)
    job = rid()
    await reserve(stub, ws, job, 5)
    done = await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=8))
    assert (8, 0, 0) == (done.charged, done.released, done.shortfall)
    assert 12 == done.balance.available


async def test_commit_above_the_hold_without_enough_available_reports_the_shortfall(stub, ws):
    await grant(stub, ws, 10)
    job = rid()
    await reserve(stub, ws, job, 6)
    done = await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=15))
    assert (10, 5) == (done.charged, done.shortfall)
    b = await balance(stub, ws)
    assert (0, 0, 10) == (b.available, b.held, b.lifetime_used)
    history = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws))
    charge = history.entries[0]
    assert (pb.ENTRY_KIND_CHARGE, -10, 5, 0) == (
        charge.kind,
        charge.amount,
        charge.shortfall,
        charge.balance_after,
    )


async def test_release_returns_the_hold_in_full(stub, ws):
    await grant(stub, ws, 30)
    job = rid()
    await reserve(stub, ws, job, 12)
    out = await stub.Release(pb.ReleaseRequest(workspace_id=ws, request_id=job))
    assert (pb.HOLD_STATE_RELEASED, 12) == (out.hold.state, out.released)
    b = await balance(stub, ws)
    assert (30, 0, 0) == (b.available, b.held, b.lifetime_used)


async def test_commit_after_release_is_refused_and_charges_nothing(stub, ws):
    await grant(stub, ws, 30)
    job = rid()
    await reserve(stub, ws, job, 12)
    await stub.Release(pb.ReleaseRequest(workspace_id=ws, request_id=job))
    f = await fails(stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=3)))
    assert ("FAILED_PRECONDITION", "HOLD_RELEASED") == (f.code.name, f.reason)
    assert 30 == (await balance(stub, ws)).available


async def test_release_after_commit_is_refused(stub, ws):
    await grant(stub, ws, 30)
    job = rid()
    await reserve(stub, ws, job, 5)
    await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=5))
    f = await fails(stub.Release(pb.ReleaseRequest(workspace_id=ws, request_id=job)))
    assert ("FAILED_PRECONDITION", "HOLD_COMMITTED") == (f.code.name, f.reason)
    assert 25 == (await balance(stub, ws)).available


async def test_extend_moves_the_expiry_of_a_held_hold(stub, ws):
    await grant(stub, ws, 30)
    job = rid()
    hold = await reserve(stub, ws, job, 5, ttl=duration_pb2.Duration(seconds=60))
    out = await stub.Extend(
        pb.ExtendRequest(workspace_id=ws, request_id=job, ttl=duration_pb2.Duration(seconds=3600))
    )
    moved = out.hold.expires_at.ToDatetime() - hold.expires_at.ToDatetime()
    assert timedelta(minutes=58) < moved < timedelta(minutes=61)


async def test_extend_of_a_released_hold_is_refused(stub, ws):
    await grant(stub, ws, 30)
    job = rid()
    await reserve(stub, ws, job, 5)
    await stub.Release(pb.ReleaseRequest(workspace_id=ws, request_id=job))
    f = await fails(stub.Extend(pb.ExtendRequest(workspace_id=ws, request_id=job)))
    assert ("FAILED_PRECONDITION", "HOLD_RELEASED") == (f.code.name, f.reason)


async def test_charge_reserves_and_commits_in_one_call(stub, ws):
    await grant(stub, ws, 10)
    out = await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws, request_id=rid(), operation="rss.process_item", usage=pb.Usage(items=4)
        )
    )
    assert (4, 0, pb.HOLD_STATE_COMMITTED) == (out.charged, out.shortfall, out.hold.state)
    assert (6, 4) == (out.balance.available, out.balance.lifetime_used)


async def test_a_charge_beyond_the_balance_is_refused_and_charges_nothing(stub, ws):
    await grant(stub, ws, 3)
    f = await fails(stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=4)))
    assert ("FAILED_PRECONDITION", "INSUFFICIENT_CREDITS") == (f.code.name, f.reason)
    assert 3 == (await balance(stub, ws)).available


async def test_a_late_commit_after_the_hold_expired_is_honoured_from_available(stub, ws, db):
    await grant(stub, ws, 20)
    job = rid()
    await reserve(stub, ws, job, 8)
    db.execute(
        "UPDATE holds SET expires_at = now() - interval '1 second' "
        "WHERE workspace_id = :w AND request_id = :r",
        w=ws,
        r=job,
    )
    done = await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=6))
    assert (6, 0, True) == (done.charged, done.shortfall, done.late)
    b = await balance(stub, ws)
    assert (14, 0, 6) == (b.available, b.held, b.lifetime_used)


async def test_the_sweeper_expires_overdue_holds_and_returns_their_credits(stub, ws):
    await grant(stub, ws, 20)
    job = rid()
    await reserve(stub, ws, job, 8, ttl=duration_pb2.Duration(seconds=1))
    assert 12 == (await balance(stub, ws)).available
    await eventually(lambda: _no_holds(stub, ws))
    b = await balance(stub, ws)
    assert (20, 0) == (b.available, b.held)
    holds = await stub.ListHolds(pb.ListHoldsRequest(workspace_id=ws))
    assert [pb.HOLD_STATE_EXPIRED] == [h.state for h in holds.holds]


async def test_a_late_commit_after_the_sweeper_expired_the_hold_is_still_charged(stub, ws):
    await grant(stub, ws, 20)
    job = rid()
    await reserve(stub, ws, job, 8, ttl=duration_pb2.Duration(seconds=1))
    await eventually(lambda: _no_holds(stub, ws))
    done = await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=25))
    assert (20, 5, True) == (done.charged, done.shortfall, done.late)
    assert 0 == done.balance.available


async def test_grants_burn_earliest_expiry_first_then_oldest_and_never_expiring_last(stub, ws, db):
    now = datetime.now(UTC)
    forever = (await grant(stub, ws, 10)).lot.lot_id
    late = (await grant(stub, ws, 10, expires_at=_ts(now + timedelta(days=90)))).lot.lot_id
    soon = (await grant(stub, ws, 10, expires_at=_ts(now + timedelta(days=10)))).lot.lot_id
    await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=15))
    remaining = dict(
        (str(r.lot_id), r.remaining)
        for r in db.rows("SELECT lot_id, remaining FROM lots WHERE workspace_id = :w", w=ws)
    )
    assert {soon: 0, late: 5, forever: 10} == remaining
    b = await balance(stub, ws)
    assert 0 == b.expiring_soon.credits  # the 10-day lot is spent


async def test_a_hold_draws_from_specific_lots_and_returns_to_them(stub, ws, db):
    now = datetime.now(UTC)
    a = (await grant(stub, ws, 5, expires_at=_ts(now + timedelta(days=1)))).lot.lot_id
    b = (await grant(stub, ws, 5)).lot.lot_id
    job = rid()
    await reserve(stub, ws, job, 7)
    drawn = db.rows(
        "SELECT draw_lots, draw_amounts FROM holds WHERE workspace_id = :w AND request_id = :r",
        w=ws,
        r=job,
    )[0]
    assert [[int(a), 5], [int(b), 2]] == [list(x) for x in zip(*drawn, strict=True)]
    await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=4))
    remaining = {
        str(r.lot_id): r.remaining
        for r in db.rows("SELECT lot_id, remaining FROM lots WHERE workspace_id = :w", w=ws)
    }
    assert {a: 1, b: 5} == remaining


async def test_grant_creates_the_workspace_and_a_lot(stub, ws):
    out = await stub.GrantCredits(
        pb.GrantCreditsRequest(
            workspace_id=ws, request_id=rid("pay"), amount=40, source="promotion"
        )
    )
    assert (pb.ENTRY_KIND_GRANT, 40, 40) == (
        out.entry.kind,
        out.entry.amount,
        out.entry.balance_after,
    )
    assert (40, 40, "promotion") == (out.lot.amount, out.lot.remaining, out.lot.source)
    assert (40, 40) == (out.balance.available, out.balance.lifetime_granted)


async def test_grant_by_package_adds_its_credits_expiring_in_twelve_months(stub, ws):
    out = await stub.GrantCredits(
        pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("pay"), package="Popular")
    )
    assert (550, "Popular", "purchase") == (out.lot.amount, out.lot.package, out.lot.source)
    expiry = out.lot.expires_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(days=364) < expiry <= timedelta(days=365)


async def test_adjustments_go_both_ways_but_never_below_zero(stub, ws):
    await grant(stub, ws, 10)
    up = await stub.AdjustCredits(
        pb.AdjustCreditsRequest(workspace_id=ws, request_id=rid("adj"), amount=5, reason="goodwill")
    )
    down = await stub.AdjustCredits(
        pb.AdjustCreditsRequest(workspace_id=ws, request_id=rid("adj"), amount=-12, reason="fix")
    )
    assert (15, 3) == (up.balance.available, down.balance.available)
    f = await fails(
        stub.AdjustCredits(
            pb.AdjustCreditsRequest(workspace_id=ws, request_id=rid("adj"), amount=-4, reason="x")
        )
    )
    assert ("FAILED_PRECONDITION", "INSUFFICIENT_CREDITS") == (f.code.name, f.reason)
    assert 3 == (await balance(stub, ws)).available


async def test_get_balance_reports_every_field(stub, ws):
    now = datetime.now(UTC)
    await grant(stub, ws, 150, expires_at=_ts(now + timedelta(days=20)))
    await grant(stub, ws, 50)
    await reserve(stub, ws, rid(), 30)
    await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws, request_id=rid(), amount=100, operation="strategy.analyze"
        )
    )
    b = await balance(stub, ws)
    assert (70, 30, 100, 200, 100) == (
        b.available,
        b.held,
        b.lifetime_used,
        b.lifetime_granted,
        b.total,
    )
    assert pb.BALANCE_LEVEL_LOW == b.level
    assert (pb.ENTRY_KIND_CHARGE, -100, "strategy.analyze") == (
        b.last_transaction.kind,
        b.last_transaction.amount,
        b.last_transaction.operation,
    )
    assert 20 == b.expiring_soon.credits  # 150 - 30 held - 100 charged, burning this lot first
    assert (100, 10) == (b.thresholds.low, b.thresholds.critical)


async def test_list_holds_filters_by_state(stub, ws):
    await grant(stub, ws, 30)
    kept, gone = rid(), rid()
    await reserve(stub, ws, kept, 1)
    await reserve(stub, ws, gone, 1)
    await stub.Release(pb.ReleaseRequest(workspace_id=ws, request_id=gone))
    held = await stub.ListHolds(pb.ListHoldsRequest(workspace_id=ws, states=[pb.HOLD_STATE_HELD]))
    every = await stub.ListHolds(pb.ListHoldsRequest(workspace_id=ws))
    assert [kept] == [h.request_id for h in held.holds]
    assert [gone, kept] == [h.request_id for h in every.holds]


async def test_transactions_come_newest_first_in_pages_that_cover_every_entry_once(stub, ws):
    await grant(stub, ws, 100)
    for _ in range(7):
        await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1))
    seen, token = [], ""
    while True:
        page = await stub.ListTransactions(
            pb.ListTransactionsRequest(workspace_id=ws, page_size=3, page_token=token)
        )
        seen += [e.entry_id for e in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert [str(i) for i in range(8, 0, -1)] == seen
    balances = [
        e.balance_after
        for e in (
            await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws, page_size=100))
        ).entries
    ]
    assert [93, 94, 95, 96, 97, 98, 99, 100] == balances


async def test_transactions_filter_by_kind_operation_and_actor(stub, ws):
    await grant(stub, ws, 100)
    await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws,
            request_id=rid(),
            amount=1,
            operation="content.optimize",
            actor_id="ann",
        )
    )
    await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws,
            request_id=rid(),
            amount=2,
            operation="strategy.analyze",
            actor_id="bob",
        )
    )
    by_kind = await stub.ListTransactions(
        pb.ListTransactionsRequest(workspace_id=ws, kinds=[pb.ENTRY_KIND_GRANT])
    )
    by_op = await stub.ListTransactions(
        pb.ListTransactionsRequest(workspace_id=ws, operations=["strategy.analyze"])
    )
    by_actor = await stub.ListTransactions(
        pb.ListTransactionsRequest(workspace_id=ws, actor_id="ann")
    )
    assert [100] == [e.amount for e in by_kind.entries]
    assert [-2] == [e.amount for e in by_op.entries]
    assert [-1] == [e.amount for e in by_actor.entries]


async def test_a_page_token_only_continues_the_query_it_came_from(stub, ws):
    await grant(stub, ws, 100)
    await grant(stub, ws, 100)
    page = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws, page_size=1))
    f = await fails(
        stub.ListTransactions(
            pb.ListTransactionsRequest(
                workspace_id=ws,
                page_size=1,
                page_token=page.next_page_token,
                kinds=[pb.ENTRY_KIND_CHARGE],
            )
        )
    )
    assert ("INVALID_ARGUMENT", ["page_token"]) == (f.code.name, f.fields)


async def test_quotes_and_backslashes_in_text_are_stored_exactly(stub, ws, db):
    """Batch documents are inlined as SQL literals: quoting must survive hostile text."""
    await grant(stub, ws, 10)
    job = rid()
    labels = {"who": "O'Brien'); DROP TABLE journal; --", "path": 'C:\\tmp\\x "y"'}
    await reserve(stub, ws, job, 1, labels=labels)
    await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=1))
    await stub.AdjustCredits(
        pb.AdjustCreditsRequest(workspace_id=ws, request_id=rid(), amount=1, reason="it's \\ fine")
    )
    history = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws))
    assert "it's \\ fine" == history.entries[0].reason
    assert labels == dict(history.entries[1].labels)
    assert 3 == db.scalar("SELECT count(*) FROM journal WHERE workspace_id = :w", w=ws)


async def test_text_that_looks_like_array_syntax_or_null_is_stored_exactly(stub, ws, db):
    """Batches carry their columns as array literals: braces, commas, quotes and the word
    NULL inside text must come back as written, never as structure or as a missing value."""
    await grant(stub, ws, 10)
    job = rid()
    labels = {"a": "NULL", "b": "{1,2}", "c": 'x,"y"}', "d": " spaced ", "e": "ünï 💳"}
    await reserve(stub, ws, job, 1, labels=labels)
    await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=1))
    await stub.AdjustCredits(
        pb.AdjustCreditsRequest(workspace_id=ws, request_id=rid(), amount=1, reason="NULL")
    )
    history = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws))
    assert "NULL" == history.entries[0].reason
    assert labels == dict(history.entries[1].labels)
    assert labels == db.scalar(
        "SELECT labels FROM holds WHERE workspace_id = :w AND request_id = :r", w=ws, r=job
    )
