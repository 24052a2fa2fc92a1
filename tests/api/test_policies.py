"""Credit policies over the wire (DESIGN.md §10): member limits, categories and priority,
pending grants, auto top-up, and the refusals of bad settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from meter.app import App
from meterpb.v1 import meter_pb2 as pb
from tests.events.feed import wait_events
from tests.support import balance, fails, grant, rid

DAY = pb.LIMIT_PERIOD_DAY
PAID, PROMO, MANUAL = (
    pb.CREDIT_CATEGORY_PAID,
    pb.CREDIT_CATEGORY_PROMOTIONAL,
    pb.CREDIT_CATEGORY_MANUAL,
)


@contextlib.contextmanager
def clock_at(app: App, moment: datetime) -> Iterator[None]:
    """Run the ledger's clock as if it were `moment` now."""
    app.clock.offset = moment - datetime.now(UTC)
    try:
        yield
    finally:
        app.clock.offset = timedelta(0)


async def set_limit(stub: Any, ws: str, actor: str, limit: int | None, period: int = DAY) -> Any:
    return await stub.SetMemberLimit(
        pb.SetMemberLimitRequest(workspace_id=ws, actor_id=actor, period=period, limit=limit)
    )


def reserve_as(stub: Any, ws: str, actor: str, amount: int, request_id: str = "") -> Any:
    return stub.Reserve(
        pb.ReserveRequest(
            workspace_id=ws, request_id=request_id or rid(), amount=amount, actor_id=actor
        )
    )


# Member limits.


@pytest.mark.parametrize("path", ["unary", "stream", "charge"])
async def test_racing_reserves_of_one_member_hold_exactly_the_limit(stub, events, ws, path):
    await grant(stub, ws, 1000)
    await set_limit(stub, ws, "ana", 10)
    jobs = [rid() for _ in range(50)]
    if path == "stream":
        call = stub.Stream()
        await call.write(
            pb.StreamRequest(
                items=[
                    pb.StreamItem(
                        reserve=pb.ReserveRequest(
                            workspace_id=ws, request_id=j, amount=1, actor_id="ana"
                        )
                    )
                    for j in jobs
                ]
            )
        )
        await call.done_writing()
        results = [r async for m in call for r in m.results]
        codes = [r.status.code for r in results]
        ok = codes.count(0)
        assert ok + codes.count(grpc.StatusCode.FAILED_PRECONDITION.value[0]) == 50
    else:

        async def one(j: str) -> grpc.StatusCode:
            try:
                if path == "charge":
                    await stub.Charge(
                        pb.ChargeRequest(workspace_id=ws, request_id=j, amount=1, actor_id="ana")
                    )
                else:
                    await reserve_as(stub, ws, "ana", 1, j)
            except grpc.aio.AioRpcError as e:
                return e.code()
            return grpc.StatusCode.OK

        outcomes = await asyncio.gather(*(one(j) for j in jobs))
        assert {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION} == set(outcomes)
        ok = outcomes.count(grpc.StatusCode.OK)
    assert 10 == ok
    b = await balance(stub, ws)
    assert 990 == b.available
    f = await fails(reserve_as(stub, ws, "ana", 1))
    assert "MEMBER_LIMIT_REACHED" == f.reason
    await reserve_as(stub, ws, "ana", 0)  # a free operation goes past no limit
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0)
    assert {
        "limit": "10",
        "used": "10",
        "remaining": "0",
        "period": "day",
        "actor_id": "ana",
        "required": "1",
    }.items() <= f.metadata.items()
    assert datetime.fromisoformat(f.metadata["resets_at"]) == tomorrow.replace(microsecond=0)
    # Another member is not limited; one event for the period however many refusals.
    await reserve_as(stub, ws, "bo", 100)
    reached = await wait_events(events, ws, 1, "member.limit_reached")
    assert 1 == len(reached)
    assert {"actor_id": "ana", "limit": 10, "used": 10, "period": "day"}.items() <= reached[0][
        1
    ].items()


async def test_a_member_limit_resets_at_the_period_boundary(app, stub, ws):
    await grant(stub, ws, 1000)
    await set_limit(stub, ws, "ana", 5)
    job = rid()
    await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=job, amount=4, actor_id="ana"))
    assert "MEMBER_LIMIT_REACHED" == (await fails(reserve_as(stub, ws, "ana", 2))).reason
    # A refund of today's charge gives its room back.
    await stub.Refund(
        pb.RefundRequest(workspace_id=ws, request_id=rid("r"), charge_request_id=job, amount=4)
    )
    held = rid()
    await reserve_as(stub, ws, "ana", 5, held)
    await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=held, amount=5))
    assert "MEMBER_LIMIT_REACHED" == (await fails(reserve_as(stub, ws, "ana", 1))).reason
    tomorrow = datetime.now(UTC).replace(hour=0, minute=5) + timedelta(days=1)
    with clock_at(app, tomorrow):
        await reserve_as(stub, ws, "ana", 5)  # a new day: 5 more
        f = await fails(reserve_as(stub, ws, "ana", 1))
        assert ("5", "0") == (f.metadata["used"], f.metadata["remaining"])


async def test_the_default_limit_applies_to_every_member_and_a_member_limit_overrides_it(stub, ws):
    await grant(stub, ws, 1000)
    await set_limit(stub, ws, "", 3)
    await set_limit(stub, ws, "lead", 50)
    assert "MEMBER_LIMIT_REACHED" == (await fails(reserve_as(stub, ws, "ana", 4))).reason
    await reserve_as(stub, ws, "lead", 40)
    await reserve_as(stub, ws, "", 500)  # no actor: no member to limit
    got = await stub.ListMemberLimits(pb.ListMemberLimitsRequest(workspace_id=ws))
    assert [("", 3, 0), ("lead", 50, 40)] == [(x.actor_id, x.limit, x.used) for x in got.limits]
    # Removing the last limit stops the counting; a new limit starts from the holds.
    await set_limit(stub, ws, "", None)
    removed = await set_limit(stub, ws, "lead", None)
    assert not removed.HasField("limit")
    assert [] == list(
        (await stub.ListMemberLimits(pb.ListMemberLimitsRequest(workspace_id=ws))).limits
    )
    again = await set_limit(stub, ws, "lead", 45)
    assert (40, 5) == (again.used, again.remaining)
    assert "MEMBER_LIMIT_REACHED" == (await fails(reserve_as(stub, ws, "lead", 6))).reason
    assert [] == list((await stub.Audit(pb.AuditRequest(workspace_id=ws))).discrepancies)


async def test_the_audit_finds_a_member_total_that_disagrees_with_the_holds(stub, ws, db):
    await grant(stub, ws, 100)
    await set_limit(stub, ws, "ana", 50)
    await reserve_as(stub, ws, "ana", 7)
    db.execute("UPDATE budget_spend SET held = 3 WHERE workspace_id = :w", w=ws)
    found = (await stub.Audit(pb.AuditRequest(workspace_id=ws))).discrepancies
    assert ["budget_spend"] == [d.check for d in found]


async def test_usage_by_actor_shows_each_members_limit_and_remaining(stub, ws):
    await grant(stub, ws, 1000)
    for actor, amount in (("ana", 7), ("bo", 2)):
        await stub.Charge(
            pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=amount, actor_id=actor)
        )
    await set_limit(stub, ws, "ana", 20)
    await set_limit(stub, ws, "", 100, pb.LIMIT_PERIOD_MONTH)
    got = await stub.GetUsage(pb.GetUsageRequest(workspace_id=ws, group_by=pb.USAGE_GROUPING_ACTOR))
    rows = {r.key: [(x.period, x.limit, x.used, x.remaining) for x in r.limits] for r in got.rows}
    assert [(DAY, 20, 7, 13), (pb.LIMIT_PERIOD_MONTH, 100, 7, 93)] == rows["ana"]
    assert [(pb.LIMIT_PERIOD_MONTH, 100, 2, 98)] == rows["bo"]


# Categories and priority.


async def test_promotional_credits_burn_before_paid_ones_by_priority(stub, ws):
    await grant(stub, ws, 100)  # a manual grant, priority 50
    await grant(stub, ws, 0, package="Starter")  # paid, 100, priority 50, expires in a year
    promo = await grant(stub, ws, 30, source="promotion", priority=10)
    assert (PROMO, 10) == (promo.lot.category, promo.lot.priority)
    await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=40))
    b = await balance(stub, ws)
    # Promotion first (priority 10), then the paid lot (same priority, earlier expiry).
    assert {PAID: 90, MANUAL: 100} == {c.category: c.available for c in b.by_category}
    history = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws))
    assert [0, PROMO, PAID, MANUAL] == [e.category for e in history.entries]
    # A charge from one lot carries its category.
    await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=5))
    history = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws))
    assert PAID == history.entries[0].category


# Pending grants.


async def test_a_pending_grant_is_invisible_to_reserve_until_confirmed(stub, events, ws):
    payment = rid("pay")
    pending = pb.GrantCreditsRequest(
        workspace_id=ws, request_id=payment, package="Basic", pending=True
    )
    first = await stub.GrantCredits(pending)
    assert not first.HasField("entry")
    assert (pb.LOT_STATE_PENDING, 250) == (first.lot.state, first.balance.pending)
    assert (0, 0) == (first.balance.available, first.balance.total)
    assert "INSUFFICIENT_CREDITS" == (await fails(reserve_as(stub, ws, "", 1))).reason
    assert first == await stub.GrantCredits(pending)  # a replay
    assert [] == list((await stub.Audit(pb.AuditRequest(workspace_id=ws))).discrepancies)
    confirm = pb.ConfirmGrantRequest(workspace_id=ws, request_id=payment)
    done = await stub.ConfirmGrant(confirm)
    assert (250, 0, pb.LOT_STATE_CONFIRMED) == (
        done.balance.available,
        done.balance.pending,
        done.lot.state,
    )
    assert (pb.ENTRY_KIND_GRANT, 250, payment) == (
        done.entry.kind,
        done.entry.amount,
        done.entry.request_id,
    )
    assert done == await stub.ConfirmGrant(confirm)  # idempotent
    assert (
        "GRANT_CONFIRMED"
        == (
            await fails(stub.VoidGrant(pb.VoidGrantRequest(workspace_id=ws, request_id=payment)))
        ).reason
    )
    await reserve_as(stub, ws, "", 250)
    again = await stub.GrantCredits(pending)  # the purchase's replay after its confirmation
    assert (payment, 250) == (again.entry.request_id, again.entry.amount)
    found = await wait_events(events, ws, 2, "grant.pending", "grant.confirmed", "grant.voided")
    types = [t for t, _ in found]
    assert ["grant.pending", "grant.confirmed"] == types
    audit = await stub.Audit(pb.AuditRequest(workspace_id=ws))
    assert [] == list(audit.discrepancies)


async def test_a_voided_grant_never_becomes_spendable(stub, events, ws, db):
    payment = rid("pay")
    pending = pb.GrantCreditsRequest(workspace_id=ws, request_id=payment, amount=80, pending=True)
    await stub.GrantCredits(pending)
    void = pb.VoidGrantRequest(workspace_id=ws, request_id=payment, reason="card declined")
    voided = await stub.VoidGrant(void)
    assert (pb.LOT_STATE_VOIDED, 0, 0) == (
        voided.lot.state,
        voided.balance.pending,
        voided.balance.available,
    )
    assert voided == await stub.VoidGrant(void)
    snapshot = db.snapshot(ws)
    # Confirming it, or replaying the purchase, changes nothing.
    f = await fails(stub.ConfirmGrant(pb.ConfirmGrantRequest(workspace_id=ws, request_id=payment)))
    assert (grpc.StatusCode.FAILED_PRECONDITION, "GRANT_VOIDED") == (f.code, f.reason)
    assert not (await stub.GrantCredits(pending)).HasField("entry")
    assert snapshot == db.snapshot(ws)
    assert [("grant.voided", "card declined")] == [
        (t, d["reason"]) for t, d in await wait_events(events, ws, 1, "grant.voided")
    ]


async def test_confirming_a_grant_that_was_never_pending_is_refused(stub, ws, db):
    paid = rid("pay")
    await stub.GrantCredits(pb.GrantCreditsRequest(workspace_id=ws, request_id=paid, amount=5))
    snapshot = db.snapshot(ws)
    for call in (
        stub.ConfirmGrant(pb.ConfirmGrantRequest(workspace_id=ws, request_id=paid)),
        stub.VoidGrant(pb.VoidGrantRequest(workspace_id=ws, request_id=paid)),
    ):
        assert "GRANT_NOT_PENDING" == (await fails(call)).reason
    f = await fails(stub.ConfirmGrant(pb.ConfirmGrantRequest(workspace_id=ws, request_id="nope")))
    assert (grpc.StatusCode.NOT_FOUND, "GRANT_NOT_FOUND") == (f.code, f.reason)
    assert snapshot == db.snapshot(ws)


async def test_a_waiting_reserve_is_woken_by_the_confirmation(stub, ws):
    payment = rid("pay")
    await stub.GrantCredits(
        pb.GrantCreditsRequest(workspace_id=ws, request_id=payment, amount=50, pending=True)
    )
    waiting = asyncio.ensure_future(
        stub.Reserve(
            pb.ReserveRequest(
                workspace_id=ws,
                request_id=rid(),
                amount=30,
                wait_for_funds={"seconds": 20},
            )
        )
    )
    await asyncio.sleep(0.3)
    assert not waiting.done()
    t0 = asyncio.get_running_loop().time()
    await stub.ConfirmGrant(pb.ConfirmGrantRequest(workspace_id=ws, request_id=payment))
    held = await asyncio.wait_for(waiting, 5)
    assert 30 == held.hold.amount
    assert asyncio.get_running_loop().time() - t0 < 2


# Auto top-up.


TOPUP_TYPES = ("topup.requested", "topup.failed", "topup.disabled")


async def topup_events(events: Any, ws: str, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The workspace's top-up events once there are n of them (the feed shows an event once
    every transaction older than it has ended, on this busy cluster a moment later)."""
    return await wait_events(events, ws, n, *TOPUP_TYPES)


async def test_auto_top_up_is_requested_once_per_crossing_and_resolved_by_the_grant(
    app, stub, events, ws
):
    await grant(stub, ws, 60)
    rule = await stub.SetAutoTopUp(
        pb.SetAutoTopUpRequest(
            workspace_id=ws, enabled=True, threshold=50, amount=100, monthly_limit=2
        )
    )
    assert (True, "") == (rule.enabled, rule.outstanding_request_id)
    for _ in range(3):  # the first crosses; the others find one outstanding
        await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=5))
    found = await topup_events(events, ws, 1)
    assert 1 == len(found)
    request_id = found[0][1]["request_id"]
    assert f"topup:{ws}:1" == request_id
    assert {"amount": 100, "threshold": 50}.items() <= found[0][1].items()
    got = await stub.GetAutoTopUp(pb.GetAutoTopUpRequest(workspace_id=ws))
    assert (request_id, 1) == (got.outstanding_request_id, got.requested_this_month)
    # The payment handler buys and grants with the request id: resolved, idempotently.
    paid = pb.GrantCreditsRequest(workspace_id=ws, request_id=request_id, amount=100)
    await stub.GrantCredits(paid)
    await stub.GrantCredits(paid)
    assert 145 == (await balance(stub, ws)).available
    got = await stub.GetAutoTopUp(pb.GetAutoTopUpRequest(workspace_id=ws))
    assert "" == got.outstanding_request_id
    # A second crossing: a second request; the month's limit of 2 stops a third.
    await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=100))
    second = (await topup_events(events, ws, 2))[-1][1]["request_id"]
    assert f"topup:{ws}:2" == second
    await stub.GrantCredits(pb.GrantCreditsRequest(workspace_id=ws, request_id=second, amount=100))
    await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=120))
    assert 2 == len(await topup_events(events, ws, 2))
    next_month = (datetime.now(UTC).replace(day=1) + timedelta(days=32)).replace(day=2)
    with clock_at(app, next_month):
        await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1))
        assert 3 == len(await topup_events(events, ws, 3))


async def test_three_failed_top_ups_in_a_row_disable_the_rule(stub, events, ws, db):
    await grant(stub, ws, 10)
    await stub.SetAutoTopUp(
        pb.SetAutoTopUpRequest(
            workspace_id=ws, enabled=True, threshold=50, package="Starter", monthly_limit=10
        )
    )
    for n in range(1, 4):
        request_id = f"topup:{ws}:{n}"
        got = await stub.GetAutoTopUp(pb.GetAutoTopUpRequest(workspace_id=ws))
        assert request_id == got.outstanding_request_id
        failed = pb.ReportTopUpFailedRequest(
            workspace_id=ws, request_id=request_id, reason="card declined"
        )
        after = await stub.ReportTopUpFailed(failed)
        assert after == await stub.ReportTopUpFailed(failed)  # a replay
        assert n == after.failures
        await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1))
    assert not after.enabled
    kinds = [t for t, _ in await topup_events(events, ws, 7)]
    assert ["topup.requested", "topup.failed"] * 3 + ["topup.disabled"] == kinds
    # A report for a request that is not outstanding is refused and changes nothing.
    snapshot = db.snapshot(ws)
    f = await fails(
        stub.ReportTopUpFailed(pb.ReportTopUpFailedRequest(workspace_id=ws, request_id="x"))
    )
    assert (grpc.StatusCode.FAILED_PRECONDITION, "TOPUP_NOT_OUTSTANDING") == (f.code, f.reason)
    assert snapshot == db.snapshot(ws)
    # Enabled again, it starts afresh.
    again = await stub.SetAutoTopUp(
        pb.SetAutoTopUpRequest(
            workspace_id=ws, enabled=True, threshold=50, package="Starter", monthly_limit=10
        )
    )
    assert (True, 0, f"topup:{ws}:4") == (
        again.enabled,
        again.failures,
        again.outstanding_request_id,
    )


# Bad input changes nothing.


async def test_bad_policy_settings_are_refused_by_field_and_change_nothing(stub, ws, db):
    await grant(stub, ws, 10)
    pay = rid("pay")
    await stub.GrantCredits(
        pb.GrantCreditsRequest(workspace_id=ws, request_id=pay, amount=5, pending=True)
    )
    snapshot = db.snapshot(ws)
    cases = [
        (set_limit(stub, ws, "ana", -1), "limit"),
        (set_limit(stub, ws, "ana", 10**13), "limit"),
        (set_limit(stub, ws, "ana", 5, period=9), "period"),
        (set_limit(stub, ws, "ana", 5, period=0), "period"),
        (grant(stub, ws, 5, priority=101), "priority"),
        (grant(stub, ws, 5, priority=-1), "priority"),
        (grant(stub, ws, 5, category=7), "category"),
        (
            stub.SetAutoTopUp(
                pb.SetAutoTopUpRequest(
                    workspace_id=ws,
                    enabled=True,
                    threshold=5,
                    package="Starter",
                    amount=5,
                    monthly_limit=1,
                )
            ),
            "amount",
        ),
        (
            stub.SetAutoTopUp(
                pb.SetAutoTopUpRequest(workspace_id=ws, enabled=True, threshold=5, monthly_limit=1)
            ),
            "package",
        ),
        (
            stub.SetAutoTopUp(
                pb.SetAutoTopUpRequest(
                    workspace_id=ws, enabled=True, threshold=5, amount=5, monthly_limit=0
                )
            ),
            "monthly_limit",
        ),
    ]
    for call, field in cases:
        f = await fails(call)
        assert (grpc.StatusCode.INVALID_ARGUMENT, [field]) == (f.code, f.fields), field
    f = await fails(
        stub.SetAutoTopUp(
            pb.SetAutoTopUpRequest(
                workspace_id=ws, enabled=True, threshold=5, package="Nope", monthly_limit=1
            )
        )
    )
    assert (grpc.StatusCode.NOT_FOUND, "PACKAGE_NOT_FOUND") == (f.code, f.reason)
    f = await fails(set_limit(stub, "no-such-workspace", "ana", 5))
    assert "WORKSPACE_NOT_FOUND" == f.reason
    assert snapshot == db.snapshot(ws)


async def test_a_waiting_reserve_over_a_member_limit_is_refused_at_once(stub, ws):
    """Funds may arrive; a member's period does not end because of a grant: no wait."""
    await grant(stub, ws, 100)
    await set_limit(stub, ws, "ana", 5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    f = await fails(
        stub.Reserve(
            pb.ReserveRequest(
                workspace_id=ws,
                request_id=rid(),
                amount=6,
                actor_id="ana",
                wait_for_funds={"seconds": 30},
            ),
            timeout=20,
        )
    )
    assert "MEMBER_LIMIT_REACHED" == f.reason
    assert loop.time() - t0 < 10


async def test_an_unanswered_top_up_request_lapses_after_a_day(app, stub, events, ws):
    await grant(stub, ws, 10)
    await stub.SetAutoTopUp(
        pb.SetAutoTopUpRequest(
            workspace_id=ws, enabled=True, threshold=50, amount=100, monthly_limit=5
        )
    )
    got = await stub.GetAutoTopUp(pb.GetAutoTopUpRequest(workspace_id=ws))
    assert f"topup:{ws}:1" == got.outstanding_request_id
    with clock_at(app, datetime.now(UTC) + timedelta(hours=23)):
        await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1))
    assert 1 == len(await topup_events(events, ws, 1))  # still outstanding
    with clock_at(app, datetime.now(UTC) + timedelta(hours=25)):
        await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1))
    found = await topup_events(events, ws, 2)
    assert [f"topup:{ws}:1", f"topup:{ws}:2"] == [d["request_id"] for _, d in found]


@pytest.mark.parametrize("pending", [False, True])
async def test_identical_grants_racing_grant_once_and_both_get_the_answer(stub, ws, pending):
    """Two identical requests in one batch: the second replays the first (DESIGN.md §3)."""
    await grant(stub, ws, 1)
    request = pb.GrantCreditsRequest(
        workspace_id=ws, request_id=rid("pay"), amount=40, pending=pending
    )
    answers = await asyncio.gather(*(stub.GrantCredits(request) for _ in range(8)))
    assert 1 == len({a.lot.lot_id for a in answers})
    b = await balance(stub, ws)
    assert ((1, 40) if pending else (41, 0)) == (b.available, b.pending)
    if pending:
        confirm = pb.ConfirmGrantRequest(workspace_id=ws, request_id=request.request_id)
        done = await asyncio.gather(*(stub.ConfirmGrant(confirm) for _ in range(8)))
        assert {40} == {d.entry.amount for d in done}
        assert 41 == (await balance(stub, ws)).available
