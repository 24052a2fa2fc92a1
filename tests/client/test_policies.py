"""Credit policies through both clients: pending grants, member limits, auto top-up."""

from __future__ import annotations

import asyncio

import pytest

from meter.client import FailedPrecondition, GrantNotFound, MemberLimitReached, MeterClient
from tests.support import grant, rid


async def test_the_async_client_runs_a_pending_purchase_and_a_member_limit(meter, stub, ws):
    payment = rid("pay")
    pending = await meter.grant(ws, payment, package="Starter", pending=True)
    assert (0, 100) == (pending.balance.available, pending.balance.pending)
    confirmed = await meter.confirm_grant(ws, payment)
    assert 100 == confirmed.balance.available
    with pytest.raises(FailedPrecondition) as voided:
        await meter.void_grant(ws, payment, reason="too late")
    assert "GRANT_CONFIRMED" == voided.value.reason
    with pytest.raises(GrantNotFound):
        await meter.confirm_grant(ws, "never-granted")

    limit = await meter.set_member_limit(ws, "ana", "day", 3)
    assert (3, 0, 3) == (limit.limit, limit.used, limit.remaining)
    await meter.charge(ws, rid(), amount=2, actor="ana")
    with pytest.raises(MemberLimitReached) as refused:
        await meter.reserve(ws, rid(), amount=2, actor="ana")
    assert (3, 2, 1) == (refused.value.limit, refused.value.used, refused.value.remaining)
    assert refused.value.resets_at
    assert [("ana", 3, 2)] == [(x.actor_id, x.limit, x.used) for x in await meter.member_limits(ws)]


async def test_the_blocking_client_sets_and_reads_auto_top_up(target, stub, ws):
    await grant(stub, ws, 20)

    def run() -> tuple[object, object, object]:
        with MeterClient(target) as client:
            rule = client.set_auto_topup(ws, threshold=50, package="Starter", monthly_limit=2)
            failed = client.report_topup_failed(ws, rule.outstanding_request_id, "declined")
            off = client.set_auto_topup(ws, enabled=False)
            return rule, failed, client.auto_topup(ws) == off

    rule, failed, same = await asyncio.to_thread(run)
    assert (True, f"topup:{ws}:1") == (rule.enabled, rule.outstanding_request_id)  # type: ignore[attr-defined]
    assert (1, "") == (failed.failures, failed.outstanding_request_id)  # type: ignore[attr-defined]
    assert same is True
