"""Webhooks against real HTTP receivers: Standard Webhooks signatures (checked with the
reference library and an HMAC written here), rotation, retries on the configured schedule,
the delivery log, replay, auto-disable, filters, and receivers that misbehave."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import standardwebhooks
from google.protobuf import field_mask_pb2, timestamp_pb2

from meter.webhooks import WebhookVerificationError, verify
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb
from tests.conftest import WEBHOOK_DISABLE_AFTER_S, WEBHOOK_SCHEDULE_S, WEBHOOK_TIMEOUT_S
from tests.events.receiver import Receiver
from tests.support import eventually, fails, grant, rid


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
async def hooks(events: Any) -> AsyncIterator[list[str]]:
    """Endpoints the test made; deleted afterwards so that nothing keeps failing."""
    made: list[str] = []
    yield made
    for endpoint_id in made:
        await events.DeleteWebhookEndpoint(
            epb.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id)
        )


async def add(
    events: Any, hooks: list[str], url: str, ws: str, *types: str
) -> epb.CreateWebhookEndpointResponse:
    made = await events.CreateWebhookEndpoint(
        epb.CreateWebhookEndpointRequest(
            url=url, workspace_ids=[ws], event_types=types, request_id=rid("ep")
        )
    )
    hooks.append(made.endpoint.endpoint_id)
    return made


def hmac_signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    """Standard Webhooks' signature, computed here from its definition."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signatures(headers: dict[str, str]) -> list[str]:
    return [s.split(",", 1)[1] for s in headers["webhook-signature"].split(" ")]


async def received(receiver: Receiver, n: int, within: float = 10) -> list[Any]:
    async def enough() -> list[Any] | None:
        seen = receiver.seen()
        return seen if len(seen) >= n else None

    return await eventually(enough, within=within)


async def test_deliveries_verify_with_the_reference_library_and_by_hand(
    stub, events, hooks, receiver, ws
):
    made = await add(events, hooks, receiver.url, ws)
    assert made.secret.startswith("whsec_")
    await grant(stub, ws, 250)

    [req] = await received(receiver, 1)
    payload = standardwebhooks.Webhook(made.secret).verify(req.body, req.headers)
    assert "credits.granted" == payload["type"]
    assert 250 == payload["data"]["amount"]
    assert [hmac_signature(made.secret, req.headers, req.body)] == signatures(req.headers)
    event = verify(req.body, req.headers, made.secret)
    assert req.webhook_id == event.id
    assert ws == event.data["workspace_id"]
    with pytest.raises(WebhookVerificationError):
        verify(req.body + b" ", req.headers, made.secret)
    with pytest.raises(WebhookVerificationError):
        verify(req.body, req.headers, made.secret, now=time.time() + 600)


async def test_after_a_rotation_deliveries_carry_both_signatures(stub, events, hooks, receiver, ws):
    made = await add(events, hooks, receiver.url, ws)
    rotated = await events.RotateWebhookSecret(
        epb.RotateWebhookSecretRequest(endpoint_id=made.endpoint.endpoint_id, request_id=rid())
    )
    assert rotated.secret != made.secret
    assert rotated.endpoint.HasField("previous_secret_expire_time")
    await grant(stub, ws, 5)

    [req] = await received(receiver, 1)
    expected = [hmac_signature(s, req.headers, req.body) for s in (rotated.secret, made.secret)]
    assert expected == signatures(req.headers)
    for secret in (made.secret, rotated.secret):
        standardwebhooks.Webhook(secret).verify(req.body, req.headers)
        verify(req.body, req.headers, secret)


async def test_filters_decide_what_an_endpoint_receives(stub, events, hooks, receiver, ws):
    await add(events, hooks, receiver.url, ws, "balance.low")
    await grant(stub, ws, 150)
    await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=60))

    [req] = await received(receiver, 1)
    assert "balance.low" == json.loads(req.body)["type"]


async def test_failed_attempts_are_retried_on_the_schedule_and_logged(
    stub, events, hooks, receiver, ws
):
    receiver.status = 500
    made = await add(events, hooks, receiver.url, ws)
    await grant(stub, ws, 1)
    seen = await received(receiver, 3)
    receiver.status = 204  # it recovers: the fourth attempt is delivered
    seen = await received(receiver, 4)

    gaps = [b.at - a.at for a, b in itertools.pairwise(seen)]
    for gap, planned in zip(gaps, WEBHOOK_SCHEDULE_S, strict=False):
        assert planned * 0.9 <= gap <= planned + 0.6, (gaps, WEBHOOK_SCHEDULE_S)
    assert 1 == len({r.webhook_id for r in seen})

    async def logged() -> Any:
        log = await events.ListDeliveries(
            epb.ListDeliveriesRequest(endpoint_id=made.endpoint.endpoint_id)
        )
        return log.attempts if len(log.attempts) >= 4 else None

    attempts = list(reversed(await eventually(logged)))
    assert [500, 500, 500, 204] == [a.http_status for a in attempts]
    assert [1, 2, 3, 4] == [a.attempt for a in attempts]
    assert epb.DELIVERY_STATE_DELIVERED == attempts[-1].state
    assert all(a.event_id == seen[0].webhook_id for a in attempts)
    assert "HTTP 500" == attempts[0].error


async def test_replay_re_delivers_with_the_original_ids(stub, events, hooks, receiver, ws):
    made = await add(events, hooks, receiver.url, ws)
    since = timestamp_pb2.Timestamp()
    since.GetCurrentTime()
    await grant(stub, ws, 1)
    await grant(stub, ws, 2)
    first = {r.webhook_id for r in await received(receiver, 2)}

    request = epb.ReplayEventsRequest(
        endpoint_id=made.endpoint.endpoint_id, start_time=since, request_id=rid("replay")
    )
    assert 2 == (await events.ReplayEvents(request)).queued
    assert 2 == (await events.ReplayEvents(request)).queued  # a retry queues nothing more
    again = await received(receiver, 4)
    assert first == {r.webhook_id for r in again[2:]}
    await grant(stub, ws, 3)
    await received(receiver, 5)
    await eventually(lambda: _settled(receiver, 5))


async def _settled(receiver: Receiver, n: int) -> bool:
    return len(receiver.seen()) == n


async def test_an_endpoint_failing_for_the_configured_time_is_disabled_with_an_event(
    stub, events, hooks, ws
):
    dead = Receiver().start()
    url = dead.url
    dead.stop()  # nothing listens there any more: connections are refused
    made = await add(events, hooks, url, ws)
    endpoint_id = made.endpoint.endpoint_id
    started = time.monotonic()
    await grant(stub, ws, 1)

    async def disabled() -> Any:
        got = await events.GetWebhookEndpoint(
            epb.GetWebhookEndpointRequest(endpoint_id=endpoint_id)
        )
        return got if not got.enabled else None

    got = await eventually(disabled, within=WEBHOOK_DISABLE_AFTER_S + 15)
    assert time.monotonic() - started >= WEBHOOK_DISABLE_AFTER_S
    assert got.disabled_reason.startswith("failing since")

    async def announced() -> Any:
        page = await events.ListEvents(
            epb.ListEventsRequest(types=["webhook.endpoint_disabled"], page_size=1000)
        )
        return [e for e in page.events if json.loads(e.data)["endpoint_id"] == endpoint_id]

    [event] = await eventually(announced)
    assert "" == event.workspace_id
    assert url == json.loads(event.data)["url"]


async def test_a_disabled_endpoint_receives_nothing(stub, events, hooks, receiver, ws):
    control = Receiver().start()
    try:
        off = await add(events, hooks, receiver.url, ws)
        await add(events, hooks, control.url, ws)
        await events.UpdateWebhookEndpoint(
            epb.UpdateWebhookEndpointRequest(
                endpoint=epb.WebhookEndpoint(endpoint_id=off.endpoint.endpoint_id, enabled=False),
                update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
            )
        )
        for amount in (1, 2, 3):
            await grant(stub, ws, amount)
        await received(control, 3)
        assert [] == receiver.seen()
    finally:
        control.stop()


async def test_a_test_event_is_delivered_now_and_its_attempt_returned(events, hooks, receiver, ws):
    made = await add(events, hooks, receiver.url, ws)
    sent = await events.SendTestEvent(
        epb.SendTestEventRequest(endpoint_id=made.endpoint.endpoint_id)
    )

    assert (200, "", "webhook.test") == (
        sent.attempt.http_status, sent.attempt.error, sent.attempt.event_type
    )  # fmt: skip
    [req] = receiver.seen()
    assert sent.attempt.event_id == req.webhook_id
    verify(req.body, req.headers, made.secret)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/hook", "http or https"),
        ("http://user:secret@example.com/hook", "credentials"),
        ("https://example.com/" + "a" * 2048, "2048"),
        ("not a url", "http or https"),
        ("https:///nohost", "host"),
        ("", "required"),
    ],
)
async def test_bad_urls_are_refused_and_nothing_is_created(events, url, why):
    before = len((await events.ListWebhookEndpoints(epb.ListWebhookEndpointsRequest())).endpoints)
    failed = await fails(events.CreateWebhookEndpoint(epb.CreateWebhookEndpointRequest(url=url)))
    assert grpc.StatusCode.INVALID_ARGUMENT == failed.code
    assert ["url"] == failed.fields
    assert why in failed.message
    after = len((await events.ListWebhookEndpoints(epb.ListWebhookEndpointsRequest())).endpoints)
    assert before == after


async def test_an_unknown_event_type_is_refused_by_name(events):
    failed = await fails(
        events.CreateWebhookEndpoint(
            epb.CreateWebhookEndpointRequest(url="https://example.com/h", event_types=["bal.low"])
        )
    )
    assert grpc.StatusCode.INVALID_ARGUMENT == failed.code
    assert ["event_types[0]"] == failed.fields
    assert "'bal.low'" in failed.message


async def test_secrets_appear_in_no_answer_but_the_ones_that_make_them(
    stub, events, hooks, receiver, ws
):
    made = await add(events, hooks, receiver.url, ws)
    rotated = await events.RotateWebhookSecret(
        epb.RotateWebhookSecretRequest(endpoint_id=made.endpoint.endpoint_id)
    )
    await grant(stub, ws, 1)
    await received(receiver, 1)
    answers = [
        await events.ListWebhookEndpoints(epb.ListWebhookEndpointsRequest()),
        await events.GetWebhookEndpoint(
            epb.GetWebhookEndpointRequest(endpoint_id=made.endpoint.endpoint_id)
        ),
        await events.ListDeliveries(
            epb.ListDeliveriesRequest(endpoint_id=made.endpoint.endpoint_id)
        ),
    ]
    for answer in answers:
        raw = answer.SerializeToString()
        for secret in (made.secret, rotated.secret):
            assert secret.encode() not in raw
            assert secret.removeprefix("whsec_").encode() not in raw


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("slow", f"no answer within {WEBHOOK_TIMEOUT_S:g} s"),
        ("redirect", "HTTP 302 (redirects are not followed)"),
        ("reset", "Error"),
        ("huge", ""),
    ],
)
async def test_a_hostile_receiver_costs_a_bounded_attempt(
    stub, events, hooks, receiver, ws, mode, error
):
    receiver.mode = mode
    made = await add(events, hooks, receiver.url, ws)
    await grant(stub, ws, 1)

    async def first_attempt() -> Any:
        log = await events.ListDeliveries(
            epb.ListDeliveriesRequest(endpoint_id=made.endpoint.endpoint_id)
        )
        return log.attempts[-1] if log.attempts else None

    attempt = await eventually(first_attempt, within=10)
    latency = attempt.latency.seconds + attempt.latency.nanos / 1e9
    assert latency <= WEBHOOK_TIMEOUT_S + 0.5
    assert error in attempt.error
    if mode == "huge":
        assert 200 == attempt.http_status
    if mode == "redirect":
        assert all(not r.headers.get("path", "").endswith("elsewhere") for r in receiver.seen())
        assert 1 == len(receiver.seen())


async def test_a_dead_endpoint_does_not_delay_another(stub, events, hooks, receiver, ws):
    stuck = Receiver(mode="slow").start()
    try:
        await add(events, hooks, stuck.url, ws)
        await add(events, hooks, receiver.url, ws)
        for amount in range(1, 11):
            await grant(stub, ws, amount)
        started = time.monotonic()
        await received(receiver, 10, within=5)
        # Ten events behind a receiver that never answers: the good one had them all well
        # before even one of the stuck one's attempts could time out twice.
        assert time.monotonic() - started < 2 * WEBHOOK_TIMEOUT_S
    finally:
        stuck.stop()
