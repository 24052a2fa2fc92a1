"""Alerts: once per downward crossing, re-armed by a rise, kept, and thresholds per workspace."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb
from tests.support import balance, fails, grant, rid


async def charge(stub: Any, ws: str, amount: int) -> pb.ChargeResponse:
    return await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws, request_id=rid(), operation="content.optimize", amount=amount
        )
    )


async def kinds(stub: Any, ws: str) -> list[int]:
    """Alert kinds, oldest first."""
    found = await stub.ListAlerts(pb.ListAlertsRequest(workspace_id=ws, page_size=1000))
    return [a.kind for a in reversed(found.alerts)]


async def test_an_alert_fires_once_across_many_charges_below_the_threshold(stub, ws):
    await grant(stub, ws, 150)

    await charge(stub, ws, 60)  # 90: below LOW (100)
    for _ in range(10):
        await charge(stub, ws, 5)  # 40, still LOW

    assert [pb.ALERT_KIND_LOW] == await kinds(stub, ws)
    assert pb.BALANCE_LEVEL_LOW == (await balance(stub, ws)).level


async def test_a_top_up_re_arms_the_alert_and_a_new_crossing_fires_it_again(stub, ws):
    await grant(stub, ws, 150)
    await charge(stub, ws, 60)  # 90 LOW
    await charge(stub, ws, 5)  # 85
    await grant(stub, ws, 100)  # 185: above the threshold, re-armed
    assert pb.BALANCE_LEVEL_OK == (await balance(stub, ws)).level

    await charge(stub, ws, 90)  # 95: crosses again
    await charge(stub, ws, 5)  # 90

    assert [pb.ALERT_KIND_LOW, pb.ALERT_KIND_LOW] == await kinds(stub, ws)


async def test_a_top_up_that_stays_below_the_threshold_does_not_re_arm(stub, ws):
    await grant(stub, ws, 150)
    await charge(stub, ws, 100)  # 50 LOW
    await grant(stub, ws, 20)  # 70, still LOW
    await charge(stub, ws, 10)  # 60

    assert [pb.ALERT_KIND_LOW] == await kinds(stub, ws)


async def test_falling_from_ok_to_critical_at_once_fires_low_and_critical(stub, ws):
    await grant(stub, ws, 150)
    await charge(stub, ws, 145)  # 5

    found = await stub.ListAlerts(pb.ListAlertsRequest(workspace_id=ws))
    got = sorted((a.kind, a.threshold, a.available) for a in found.alerts)
    assert [(pb.ALERT_KIND_LOW, 100, 5), (pb.ALERT_KIND_CRITICAL, 10, 5)] == got
    assert pb.BALANCE_LEVEL_CRITICAL == (await balance(stub, ws)).level


async def test_a_refused_reservation_is_an_alert_event(stub, ws):
    await grant(stub, ws, 150)
    job = rid()
    f = await fails(
        stub.Reserve(
            pb.ReserveRequest(
                workspace_id=ws, request_id=job, operation="content.optimize", amount=400
            )
        )
    )
    assert "INSUFFICIENT_CREDITS" == f.reason

    (event,) = (await stub.ListAlerts(pb.ListAlertsRequest(workspace_id=ws))).alerts
    assert (pb.ALERT_KIND_INSUFFICIENT_CREDITS, 400, 150, job, "content.optimize") == (
        event.kind,
        event.required,
        event.available,
        event.request_id,
        event.operation,
    )


async def test_alerts_are_listed_newest_first_in_pages(stub, ws):
    await grant(stub, ws, 20)
    for _ in range(5):
        await fails(charge(stub, ws, 50))

    first = await stub.ListAlerts(pb.ListAlertsRequest(workspace_id=ws, page_size=3))
    rest = await stub.ListAlerts(
        pb.ListAlertsRequest(workspace_id=ws, page_size=3, page_token=first.next_page_token)
    )

    ids = [int(a.event_id) for a in [*first.alerts, *rest.alerts]]
    # The grant took the new workspace from CRITICAL to LOW, so the first event is the refusal.
    assert sorted(ids, reverse=True) == ids
    assert 5 == len(ids)
    assert "" == rest.next_page_token


async def test_thresholds_are_set_per_workspace_and_shown_on_the_balance(stub, ws):
    await grant(stub, ws, 300)

    got = await stub.SetAlertThresholds(
        pb.SetAlertThresholdsRequest(workspace_id=ws, low=500, critical=50)
    )

    assert (ws, 500, 50) == (got.workspace_id, got.low, got.critical)
    b = await balance(stub, ws)
    assert (500, 50, pb.BALANCE_LEVEL_LOW) == (b.thresholds.low, b.thresholds.critical, b.level)


async def test_setting_a_threshold_above_the_balance_is_not_a_crossing(stub, ws):
    await grant(stub, ws, 300)
    await stub.SetAlertThresholds(
        pb.SetAlertThresholdsRequest(workspace_id=ws, low=500, critical=5)
    )
    await charge(stub, ws, 10)  # 290, LOW all along
    assert [] == await kinds(stub, ws)

    await grant(stub, ws, 300)  # 590: above, re-armed
    await charge(stub, ws, 100)  # 490: a crossing

    assert [pb.ALERT_KIND_LOW] == await kinds(stub, ws)


async def test_lowering_a_threshold_re_arms_it(stub, ws):
    await grant(stub, ws, 150)
    await charge(stub, ws, 100)  # 50 LOW
    await stub.SetAlertThresholds(pb.SetAlertThresholdsRequest(workspace_id=ws, low=40, critical=5))
    assert pb.BALANCE_LEVEL_OK == (await balance(stub, ws)).level

    await charge(stub, ws, 20)  # 30: crosses the new LOW

    assert [pb.ALERT_KIND_LOW, pb.ALERT_KIND_LOW] == await kinds(stub, ws)


async def test_setting_the_same_thresholds_twice_changes_nothing_more(stub, db, ws):
    await grant(stub, ws, 300)
    request = pb.SetAlertThresholdsRequest(workspace_id=ws, low=200, critical=20)
    first = await stub.SetAlertThresholds(request)
    before = db.snapshot(ws)

    again = await stub.SetAlertThresholds(request)

    assert first == again
    after = db.snapshot(ws)
    assert before["journal"] == after["journal"]
    assert before["alerts"] == after["alerts"]


@pytest.mark.parametrize(
    ("low", "critical", "field"),
    [
        (-1, 0, "low"),
        (100, -1, "critical"),
        (10, 20, "critical"),
        (10**12 + 1, 10, "low"),
    ],
)
async def test_bad_thresholds_are_refused_naming_the_field(stub, db, ws, low, critical, field):
    await grant(stub, ws, 300)
    before = db.snapshot(ws)

    f = await fails(
        stub.SetAlertThresholds(
            pb.SetAlertThresholdsRequest(workspace_id=ws, low=low, critical=critical)
        )
    )

    assert (grpc.StatusCode.INVALID_ARGUMENT, [field]) == (f.code, f.fields)
    assert before == db.snapshot(ws)


async def test_thresholds_of_an_unknown_workspace_are_not_found(stub):
    f = await fails(
        stub.SetAlertThresholds(
            pb.SetAlertThresholdsRequest(workspace_id=f"ws-none-{rid()}", low=10, critical=1)
        )
    )
    assert (grpc.StatusCode.NOT_FOUND, "WORKSPACE_NOT_FOUND") == (f.code, f.reason)


async def test_equal_thresholds_and_zero_are_allowed(stub, ws):
    await grant(stub, ws, 10)
    got = await stub.SetAlertThresholds(
        pb.SetAlertThresholdsRequest(workspace_id=ws, low=0, critical=0)
    )
    assert (0, 0) == (got.low, got.critical)
    assert pb.BALANCE_LEVEL_OK == (await balance(stub, ws)).level


async def _events(events: Any, ws: str) -> list[tuple[str, int]]:
    """(type, available in the event's balance) of a workspace's events, oldest first."""
    page = await events.ListEvents(epb.ListEventsRequest(workspace_id=ws, page_size=1000))
    return [(e.type, json.loads(e.data)["balance"]["available"]) for e in page.events]


async def test_a_reserve_then_its_commit_notifies_each_crossing_once(stub, events, ws, path):
    """The worker's normal flow: the hold crosses the threshold, its commit (which gives the
    hold back before charging) is not a second crossing, on either path."""
    await grant(stub, ws, 150)
    first = rid()
    await path.reserve(
        pb.ReserveRequest(
            workspace_id=ws, request_id=first, operation="content.optimize", amount=60
        )
    )
    await path.commit(pb.CommitRequest(workspace_id=ws, request_id=first, amount=60))
    await fails(
        stub.Reserve(
            pb.ReserveRequest(
                workspace_id=ws, request_id=rid(), operation="content.optimize", amount=1000
            )
        )
    )
    second = rid()
    await path.reserve(
        pb.ReserveRequest(
            workspace_id=ws, request_id=second, operation="content.optimize", amount=85
        )
    )
    await path.commit(pb.CommitRequest(workspace_id=ws, request_id=second, amount=85))

    assert [pb.ALERT_KIND_LOW, pb.ALERT_KIND_INSUFFICIENT_CREDITS, pb.ALERT_KIND_CRITICAL] == (
        await kinds(stub, ws)
    )
    assert [
        ("credits.granted", 150),
        ("balance.low", 90),
        ("reservation.refused", 90),
        ("balance.critical", 5),
        # 145 spent today: 5 left last less than the runway's 7 days.
        ("balance.runway_low", 5),
    ] == await _events(events, ws)


async def test_a_released_hold_ends_the_dip_it_started_with_balance_recovered(stub, events, ws):
    await grant(stub, ws, 150)
    job = rid()
    await reserve_amount(stub, ws, job, 60)  # 90: low
    await stub.Release(pb.ReleaseRequest(workspace_id=ws, request_id=job))  # 150
    await reserve_amount(stub, ws, rid(), 60)  # 90: low again, a new crossing

    assert [
        ("credits.granted", 150),
        ("balance.low", 90),
        ("balance.recovered", 150),
        ("balance.low", 90),
    ] == await _events(events, ws)


async def test_a_new_workspace_funded_below_the_threshold_is_not_a_crossing(stub, events, ws):
    await grant(stub, ws, 50)  # from 0 to 50: upward, nothing fires
    await grant(stub, ws, 100)  # 150: nothing was notified, nothing recovered

    assert [] == await kinds(stub, ws)
    assert [("credits.granted", 50), ("credits.granted", 150)] == await _events(events, ws)


async def reserve_amount(stub: Any, ws: str, job: str, amount: int) -> None:
    await stub.Reserve(
        pb.ReserveRequest(
            workspace_id=ws, request_id=job, operation="content.optimize", amount=amount
        )
    )
