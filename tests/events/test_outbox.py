"""The outbox: every event type written once by the change that causes it, with data a
consumer can act on alone; refused and replayed changes write none."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from meter.catalog.defaults import default_catalog_document
from meter.events.model import parse_event_id
from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb
from tests.events.feed import events_of, wait_events
from tests.support import eventually, fails, grant, rid


def ts(dt: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(dt)
    return t


async def charge(stub: Any, ws: str, amount: int, request_id: str = "") -> pb.ChargeResponse:
    return await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws,
            request_id=request_id or rid(),
            operation="content.optimize",
            amount=amount,
            actor_id="member-7",
        )
    )


def types_of(found: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [t for t, _ in found]


async def test_a_grant_writes_credits_granted_with_the_lot_and_the_balance(stub, events, ws):
    got = await grant(stub, ws, 500, source="promotion")

    [(kind, data)] = await wait_events(events, ws, 1)
    assert "credits.granted" == kind
    assert ws == data["workspace_id"]
    assert 1 == data["sequence"]
    assert 500 == data["amount"]
    assert got.lot.lot_id == data["lot"]["lot_id"]
    assert "promotion" == data["lot"]["source"]
    assert {"available": 500, "held": 0, "level": "ok"}.items() <= data["balance"].items()


async def test_the_balance_levels_fire_once_per_crossing_in_order(stub, events, ws):
    await grant(stub, ws, 150)
    await charge(stub, ws, 60)  # 90: low
    await charge(stub, ws, 5)  # 85: still low, nothing new
    await charge(stub, ws, 80)  # 5: critical; at 145 a day, 5 last less than the 7 days
    await charge(stub, ws, 5)  # 0: depleted
    await grant(stub, ws, 300)  # 300: recovered (and 300 last 14 days: the runway re-arms)

    found = await wait_events(events, ws, 7)
    assert [
        "credits.granted",
        "balance.low",
        "balance.critical",
        "balance.runway_low",
        "balance.depleted",
        "credits.granted",
        "balance.recovered",
    ] == types_of(found)
    low, critical, depleted = found[1][1], found[2][1], found[4][1]
    assert (100, 90, "low") == (
        low["threshold"],
        low["balance"]["available"],
        low["balance"]["level"],
    )
    assert (10, 5) == (critical["threshold"], critical["balance"]["available"])
    assert 0 == depleted["balance"]["available"]
    assert 300 == found[6][1]["balance"]["available"]
    # Sequences are the workspace's own, strictly increasing from 1.
    assert [1, 2, 3, 4, 5, 6, 7] == [d["sequence"] for _, d in found]


async def test_a_refused_reservation_is_an_event_and_nothing_else_is_written(stub, events, db, ws):
    await grant(stub, ws, 20)
    await events_of(events, ws)
    before = db.snapshot(ws)["holds"]

    failed = await fails(
        stub.Reserve(
            pb.ReserveRequest(
                workspace_id=ws, request_id="job-big", amount=50, actor_id="member-3",
                operation="content.optimize",
            )
        )
    )  # fmt: skip

    assert grpc.StatusCode.FAILED_PRECONDITION == failed.code
    found = await wait_events(events, ws, 2)
    assert ["credits.granted", "reservation.refused"] == types_of(found)
    data = found[1][1]
    assert (50, 20, 30) == (data["required"], data["available"], data["shortfall"])
    assert ("job-big", "member-3") == (data["request_id"], data["actor_id"])
    assert before == db.snapshot(ws)["holds"]


async def test_a_commit_beyond_the_balance_writes_commit_shortfall(stub, events, ws):
    await grant(stub, ws, 10)
    await stub.SetAlertThresholds(pb.SetAlertThresholdsRequest(workspace_id=ws, low=0, critical=0))
    await stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id="job-1", amount=10))
    await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id="job-1", amount=15))

    found = await wait_events(events, ws, 1, "commit.shortfall")
    [(_, data)] = found
    assert (10, 5, False) == (data["charged"], data["shortfall"], data["late"])
    assert "job-1" == data["hold"]["request_id"]


async def test_refunds_and_adjustments_write_their_events(stub, events, ws):
    await grant(stub, ws, 200)
    await charge(stub, ws, 40, "job-r")
    await stub.Refund(
        pb.RefundRequest(
            workspace_id=ws, request_id="refund-1", charge_request_id="job-r", amount=15,
            reason="failed delivery",
        )
    )  # fmt: skip
    await stub.AdjustCredits(
        pb.AdjustCreditsRequest(workspace_id=ws, request_id="adj-1", amount=-7, reason="fix")
    )

    refunded = (await wait_events(events, ws, 1, "credits.refunded"))[0][1]
    adjusted = (await wait_events(events, ws, 1, "credits.adjusted"))[0][1]
    assert (15, "job-r", "refund-1") == (
        refunded["amount"], refunded["charge_request_id"], refunded["request_id"]
    )  # fmt: skip
    assert 175 == refunded["balance"]["available"]
    assert (-7, "fix", 168) == (
        adjusted["amount"],
        adjusted["reason"],
        adjusted["balance"]["available"],
    )


async def test_an_expired_hold_and_an_expired_lot_write_their_events(stub, events, ws):
    soon = datetime.now(UTC) + timedelta(seconds=1)
    await grant(stub, ws, 30, expires_at=ts(soon))
    await grant(stub, ws, 100)
    await stub.Reserve(
        pb.ReserveRequest(
            workspace_id=ws, request_id="job-x", amount=50, ttl=duration_pb2.Duration(seconds=1)
        )
    )

    expired_hold = (await wait_events(events, ws, 1, "hold.expired"))[0][1]
    expired = await wait_events(events, ws, 1, "credits.expired")
    assert ("job-x", 50, "expired") == (
        expired_hold["hold"]["request_id"], expired_hold["hold"]["amount"],
        expired_hold["hold"]["state"],
    )  # fmt: skip
    assert 30 == sum(d["amount"] for _, d in expired)


async def test_a_lot_inside_the_notice_window_writes_credits_expiring_once(stub, events, ws):
    lot = (await grant(stub, ws, 80, expires_at=ts(datetime.now(UTC) + timedelta(days=3)))).lot
    await grant(stub, ws, 10, expires_at=ts(datetime.now(UTC) + timedelta(days=90)))
    await charge(stub, ws, 5)
    await charge(stub, ws, 5)

    found = await wait_events(events, ws, 1, "credits.expiring")
    await charge(stub, ws, 80)  # 10 left: balance.critical, after the charges before it
    await wait_events(events, ws, 1, "balance.critical")
    assert 1 == len(await events_of(events, ws, "credits.expiring"))
    assert lot.lot_id == found[0][1]["lot"]["lot_id"]


async def test_a_lot_entering_the_window_later_is_noticed_by_the_sweeper(stub, events, db, ws):
    await grant(stub, ws, 80, expires_at=ts(datetime.now(UTC) + timedelta(days=30)))
    await wait_events(events, ws, 1)
    # Time passes: the lot now expires in 6 days, and the notice is due.
    db.execute(
        "UPDATE lots SET expires_at = now() + interval '6 days' WHERE workspace_id = :w", w=ws
    )
    db.execute(
        "UPDATE workspaces SET next_notice_at = now() - interval '1 day' WHERE workspace_id = :w",
        w=ws,
    )

    found = await wait_events(events, ws, 1, "credits.expiring")
    assert 80 == found[0][1]["lot"]["remaining"]
    # The lot's flag was stored: later changes of the workspace write no second notice.
    await charge(stub, ws, 5)
    await grant(stub, ws, 5)
    await wait_events(events, ws, 2, "credits.granted")
    assert 1 == len(await events_of(events, ws, "credits.expiring"))
    assert [True] == [
        r.expiring_noticed
        for r in db.rows(
            "SELECT expiring_noticed FROM lots WHERE workspace_id = :w AND amount = 80", w=ws
        )
    ]


async def test_replays_and_refusals_write_no_events(stub, events, ws):
    request = pb.GrantCreditsRequest(workspace_id=ws, request_id="pay-1", amount=50)
    await stub.GrantCredits(request)
    await stub.GrantCredits(request)  # a replay
    await fails(
        stub.GrantCredits(pb.GrantCreditsRequest(workspace_id=ws, request_id="pay-1", amount=9))
    )
    await fails(stub.Commit(pb.CommitRequest(workspace_id=ws, request_id="no-such-hold")))
    await fails(
        stub.AdjustCredits(
            pb.AdjustCreditsRequest(workspace_id=ws, request_id="adj", amount=-500, reason="x")
        )
    )
    await charge(stub, ws, 1)  # a change after them all: the feed has caught up past them

    found = await wait_events(events, ws, 1)
    await eventually(lambda: _count_is(events, ws, 1), within=5)
    assert ["credits.granted"] == types_of(found)


async def _count_is(events: Any, ws: str, n: int) -> bool:
    return len(await events_of(events, ws)) == n


async def test_publishing_a_catalog_writes_catalog_published(catalog, events):
    doc = default_catalog_document()
    published = await catalog.PublishCatalog(
        cpb.PublishCatalogRequest(document=doc, request_id=rid("cat"), description="spring prices")
    )

    async def found() -> Any:
        page = await events.ListEvents(
            epb.ListEventsRequest(types=["catalog.published"], page_size=1000)
        )
        return [
            json.loads(e.data)
            for e in page.events
            if json.loads(e.data)["version"] == published.catalog_version
        ]

    [data] = await eventually(found)
    assert "spring prices" == data["description"]


async def test_event_ids_are_stable_and_name_their_row(stub, events, ws):
    await grant(stub, ws, 5)
    await wait_events(events, ws, 1)
    page = await events.ListEvents(epb.ListEventsRequest(workspace_id=ws))
    [event] = page.events
    assert (ws, event.sequence) == parse_event_id(event.event_id)
    again = await events.ListEvents(epb.ListEventsRequest(workspace_id=ws))
    assert event.event_id == again.events[0].event_id


@pytest.mark.parametrize("bad", ["balance.lowish", "", "credits"])
async def test_an_unknown_type_in_a_filter_is_refused_by_name(events, bad):
    failed = await fails(events.ListEvents(epb.ListEventsRequest(types=["balance.low", bad])))
    assert grpc.StatusCode.INVALID_ARGUMENT == failed.code
    assert ["types[1]"] == failed.fields
    assert repr(bad) in failed.message
