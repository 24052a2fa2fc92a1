"""GetUsage: credits used (charges less refunds) and counts by operation, actor, day or week."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from meterpb.v1 import meter_pb2 as pb
from tests.support import fails, grant, rid


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


async def charge(stub: Any, ws: str, operation: str, amount: int, actor: str = "") -> str:
    job = rid()
    await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws, request_id=job, operation=operation, amount=amount, actor_id=actor
        )
    )
    return job


async def refund(stub: Any, ws: str, job: str, amount: int, actor: str = "support") -> str:
    request_id = rid("refund")
    await stub.Refund(
        pb.RefundRequest(
            workspace_id=ws,
            request_id=request_id,
            charge_request_id=job,
            amount=amount,
            actor_id=actor,
        )
    )
    return request_id


async def usage(stub: Any, ws: str, group_by: int, **kw: Any) -> pb.GetUsageResponse:
    return await stub.GetUsage(pb.GetUsageRequest(workspace_id=ws, group_by=group_by, **kw))


def rows(r: pb.GetUsageResponse) -> list[tuple[str, int, int]]:
    return [(row.key, row.credits, row.count) for row in r.rows]


async def test_usage_by_operation_nets_refunds_and_counts_charges(stub, ws):
    await grant(stub, ws, 500)
    a = await charge(stub, ws, "content.generate_post", 3)
    await charge(stub, ws, "content.generate_post", 2)
    await charge(stub, ws, "strategy.analyze", 5)
    await charge(stub, ws, "assistant.simple_question", 0)
    await refund(stub, ws, a, 1)

    got = await usage(stub, ws, pb.USAGE_GROUPING_OPERATION)

    assert [
        ("strategy.analyze", 5, 1),
        ("content.generate_post", 4, 2),
        ("assistant.simple_question", 0, 1),
    ] == rows(got)
    assert (9, 4) == (got.total_credits, got.total_count)


async def test_usage_by_actor_credits_a_refund_to_whoever_was_charged(stub, ws):
    await grant(stub, ws, 500)
    alice = await charge(stub, ws, "content.generate_post", 3, actor="alice")
    await charge(stub, ws, "strategy.analyze", 5, actor="bob")
    await charge(stub, ws, "content.generate_post", 1, actor="bob")
    await refund(stub, ws, alice, 3, actor="support-agent")

    got = await usage(stub, ws, pb.USAGE_GROUPING_ACTOR)

    assert [("bob", 6, 2), ("alice", 0, 1)] == rows(got)


async def test_usage_counts_only_charges_and_refunds(stub, ws):
    await grant(stub, ws, 500)
    job = rid()
    await stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=50))
    await stub.AdjustCredits(
        pb.AdjustCreditsRequest(workspace_id=ws, request_id=rid(), amount=-5, reason="fix")
    )

    got = await usage(stub, ws, pb.USAGE_GROUPING_OPERATION)

    assert ([], 0, 0) == (rows(got), got.total_credits, got.total_count)


async def test_usage_by_day_and_week_uses_utc_days_and_weeks_starting_on_monday(stub, db, ws):
    await grant(stub, ws, 500)
    # Sunday 10 March 2024 23:30 UTC, then Monday 11 March twice, then Sunday 17 March.
    when = [
        datetime(2024, 3, 10, 23, 30, tzinfo=UTC),
        datetime(2024, 3, 11, 0, 15, tzinfo=UTC),
        datetime(2024, 3, 11, 22, 0, tzinfo=UTC),
        datetime(2024, 3, 17, 12, 0, tzinfo=UTC),
    ]
    for amount, at in zip((1, 2, 3, 4), when, strict=True):
        job = await charge(stub, ws, "content.optimize", amount)
        db.execute(
            "UPDATE journal SET created_at = :t WHERE workspace_id = :w AND request_id = :r",
            t=at,
            w=ws,
            r=job,
        )

    days = await usage(stub, ws, pb.USAGE_GROUPING_DAY)
    weeks = await usage(stub, ws, pb.USAGE_GROUPING_WEEK)

    def periods(r: pb.GetUsageResponse) -> list[tuple[datetime, int, int]]:
        return [(row.period_start.ToDatetime(tzinfo=UTC), row.credits, row.count) for row in r.rows]

    assert [
        (datetime(2024, 3, 10, tzinfo=UTC), 1, 1),
        (datetime(2024, 3, 11, tzinfo=UTC), 5, 2),
        (datetime(2024, 3, 17, tzinfo=UTC), 4, 1),
    ] == periods(days)
    assert [
        (datetime(2024, 3, 4, tzinfo=UTC), 1, 1),
        (datetime(2024, 3, 11, tzinfo=UTC), 9, 3),
    ] == periods(weeks)
    assert {""} == {row.key for row in days.rows}


async def test_usage_covers_start_time_inclusive_and_end_time_exclusive(stub, db, ws):
    await grant(stub, ws, 500)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    for amount, at in ((1, start - timedelta(seconds=1)), (2, start), (4, start + timedelta(1))):
        job = await charge(stub, ws, "content.optimize", amount)
        db.execute(
            "UPDATE journal SET created_at = :t WHERE workspace_id = :w AND request_id = :r",
            t=at,
            w=ws,
            r=job,
        )

    got = await usage(
        stub,
        ws,
        pb.USAGE_GROUPING_OPERATION,
        start_time=ts(start),
        end_time=ts(start + timedelta(1)),
    )

    assert [("content.optimize", 2, 1)] == rows(got)


async def test_usage_without_a_grouping_names_group_by(stub, ws):
    await grant(stub, ws, 10)
    f = await fails(usage(stub, ws, pb.USAGE_GROUPING_UNSPECIFIED))
    assert (grpc.StatusCode.INVALID_ARGUMENT, ["group_by"]) == (f.code, f.fields)


@pytest.mark.parametrize("group_by", [6, -1])
async def test_usage_with_an_unknown_grouping_names_group_by(stub, ws, group_by):
    await grant(stub, ws, 10)
    f = await fails(usage(stub, ws, group_by))
    assert (grpc.StatusCode.INVALID_ARGUMENT, ["group_by"]) == (f.code, f.fields)


async def test_usage_over_an_empty_or_reversed_range_names_end_time(stub, ws):
    await grant(stub, ws, 10)
    t = datetime(2024, 5, 1, tzinfo=UTC)
    f = await fails(usage(stub, ws, pb.USAGE_GROUPING_DAY, start_time=ts(t), end_time=ts(t)))
    assert (grpc.StatusCode.INVALID_ARGUMENT, ["end_time"]) == (f.code, f.fields)


async def test_usage_of_an_unknown_workspace_is_not_found(stub):
    f = await fails(usage(stub, f"ws-none-{rid()}", pb.USAGE_GROUPING_ACTOR))
    assert (grpc.StatusCode.NOT_FOUND, "WORKSPACE_NOT_FOUND") == (f.code, f.reason)


async def test_a_member_who_only_holds_credits_is_listed_with_her_limit(stub, ws):
    """The admin monitoring team usage sees who holds credits and who has a limit, before
    anything is charged: a member at 90 of a daily 100 is visible, not only members charged."""
    await grant(stub, ws, 500)
    await stub.SetMemberLimit(
        pb.SetMemberLimitRequest(
            workspace_id=ws, actor_id="ana", period=pb.LIMIT_PERIOD_DAY, limit=100
        )
    )
    await stub.SetMemberLimit(
        pb.SetMemberLimitRequest(
            workspace_id=ws, actor_id="idle", period=pb.LIMIT_PERIOD_WEEK, limit=40
        )
    )
    await stub.Reserve(
        pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=90, actor_id="ana")
    )
    await stub.Reserve(
        pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=7, actor_id="ben")
    )
    await charge(stub, ws, "strategy.analyze", 5, actor="cy")

    report = await usage(stub, ws, pb.USAGE_GROUPING_ACTOR)

    by_key = {r.key: r for r in report.rows}
    assert ["cy", "ana", "ben", "idle"] == [r.key for r in report.rows]
    assert (0, 0, 90) == (by_key["ana"].credits, by_key["ana"].count, by_key["ana"].held)
    [ana] = by_key["ana"].limits
    assert (100, 90, 10) == (ana.limit, ana.used, ana.remaining)
    assert (0, 7, []) == (by_key["ben"].credits, by_key["ben"].held, list(by_key["ben"].limits))
    [idle] = by_key["idle"].limits
    assert (40, 0, 40) == (idle.limit, idle.used, idle.remaining)
    assert (5, 1, 0) == (by_key["cy"].credits, by_key["cy"].count, by_key["cy"].held)
    assert (5, 1) == (report.total_credits, report.total_count)
