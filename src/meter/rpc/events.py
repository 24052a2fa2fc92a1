"""The meter.v1.Events servicer: the event feed, webhook endpoints and their deliveries."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from meter import errors
from meter.events import types
from meter.events.dispatcher import Dispatcher
from meter.events.model import parse_event_id
from meter.ledger.builders import fingerprint
from meter.ledger.validation import Violations
from meter.rpc import convert
from meter.rpc.handlers import unary
from meter.rpc.paging import Paging
from meter.storage.delivery_log_repo import DeliveryLogRepo
from meter.storage.events_repo import EventsRepo
from meter.storage.webhooks_repo import WebhooksRepo
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import events_pb2_grpc

MAX_URL = 2048
MAX_FILTER = 100
MAX_DESCRIPTION = 500
UPDATABLE = ("url", "description", "event_types", "workspace_ids", "enabled")


class EventsServicer(events_pb2_grpc.EventsServicer):
    def __init__(
        self,
        events: EventsRepo,
        webhooks: WebhooksRepo,
        delivery_log: DeliveryLogRepo,
        dispatcher: Dispatcher,
        paging: Paging,
    ) -> None:
        self.events = events
        self.webhooks = webhooks
        self.delivery_log = delivery_log
        self.dispatcher = dispatcher
        self.paging = paging

    @unary
    async def ListEvents(
        self, request: epb.ListEventsRequest, context: Any
    ) -> epb.ListEventsResponse:
        v = Violations()
        v.id("workspace_id", request.workspace_id, required=False)
        _types(v, "types", request.types)
        if v:
            raise errors.invalid(v)
        size = self.paging.size(request.page_size)
        ws, wanted = request.workspace_id, sorted(set(request.types))
        key = ("events", ws, tuple(wanted))
        after = self.paging.raw(request.page_token, key)
        if ws:
            seq = await self._sequence(after)
            found, seq = await self.events.workspace_feed(ws, seq, size, wanted)
            token = self.paging.token(["s", seq], key)
        else:
            pos = await self._positions(after)
            found, pos = await self.events.feed(pos, size, types_=wanted)
            token = self.paging.token(["g", pos], key)  # type: ignore[list-item]
        return epb.ListEventsResponse(
            events=[convert.event(e) for e in found], next_page_token=token
        )

    async def _sequence(self, after: Any) -> int:
        """A workspace feed's cursor: ["s", sequence], or the (txid, workspace, sequence) of
        the feed's order before positions (migration 0009)."""
        match after:
            case None:
                return 0
            case ["s", int(seq)] if seq >= 0:
                return seq
            case [int(txid), str(w), int(seq)]:
                return await self.events.sequence_of(txid, w, seq)
        raise errors.invalid_field("page_token", "not a page token of this API")

    async def _positions(self, after: Any) -> dict[str, int]:
        """The whole feed's cursor: ["g", {feed key: position}], or an old one (above)."""
        match after:
            case None:
                return {}
            case ["g", dict(pos)] if all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                for k, v in pos.items()
            ):
                return pos
            case [int(txid), str(w), int(seq)]:
                return await self.events.positions_of(txid, w, seq)
        raise errors.invalid_field("page_token", "not a page token of this API")

    @unary
    async def CreateWebhookEndpoint(
        self, request: epb.CreateWebhookEndpointRequest, context: Any
    ) -> epb.CreateWebhookEndpointResponse:
        v = Violations()
        _url(v, request.url)
        _types(v, "event_types", request.event_types)
        _workspaces(v, request.workspace_ids)
        v.text("description", request.description, limit=MAX_DESCRIPTION)
        v.id("request_id", request.request_id, required=False)
        if v:
            raise errors.invalid(v)
        event_types = sorted(set(request.event_types))
        workspace_ids = sorted(set(request.workspace_ids))
        endpoint, secret = await self.webhooks.create_endpoint(
            request.url,
            event_types,
            workspace_ids,
            request.description,
            request.request_id,
            fingerprint("webhook", request.url, event_types, workspace_ids, request.description),
        )
        self.dispatcher.endpoints_changed()
        return epb.CreateWebhookEndpointResponse(endpoint=convert.endpoint(endpoint), secret=secret)

    @unary
    async def ListWebhookEndpoints(
        self, request: epb.ListWebhookEndpointsRequest, context: Any
    ) -> epb.ListWebhookEndpointsResponse:
        return epb.ListWebhookEndpointsResponse(
            endpoints=[convert.endpoint(e) for e in await self.webhooks.endpoints()]
        )

    @unary
    async def GetWebhookEndpoint(
        self, request: epb.GetWebhookEndpointRequest, context: Any
    ) -> epb.WebhookEndpoint:
        return convert.endpoint(await self.webhooks.endpoint(_endpoint_id(request.endpoint_id)))

    @unary
    async def UpdateWebhookEndpoint(
        self, request: epb.UpdateWebhookEndpointRequest, context: Any
    ) -> epb.WebhookEndpoint:
        e = request.endpoint
        _endpoint_id(e.endpoint_id, "endpoint.endpoint_id")
        paths = list(request.update_mask.paths) or list(UPDATABLE)
        v = Violations()
        changes: dict[str, Any] = {}
        for path in paths:
            name = path.removeprefix("endpoint.")
            if name not in UPDATABLE:
                v.add("update_mask", f"{path!r} cannot be changed; one of {', '.join(UPDATABLE)}")
            elif name == "url":
                _url(v, e.url, "endpoint.url")
                changes["url"] = e.url
            elif name == "description":
                v.text("endpoint.description", e.description, limit=MAX_DESCRIPTION)
                changes["description"] = e.description
            elif name == "event_types":
                _types(v, "endpoint.event_types", e.event_types)
                changes["event_types"] = sorted(set(e.event_types))
            elif name == "workspace_ids":
                _workspaces(v, e.workspace_ids, "endpoint.workspace_ids")
                changes["workspace_ids"] = sorted(set(e.workspace_ids))
            else:
                changes["enabled"] = e.enabled
        if v:
            raise errors.invalid(v)
        endpoint = await self.webhooks.update_endpoint(e.endpoint_id, changes)
        self.dispatcher.endpoints_changed()
        return convert.endpoint(endpoint)

    @unary
    async def DeleteWebhookEndpoint(
        self, request: epb.DeleteWebhookEndpointRequest, context: Any
    ) -> epb.DeleteWebhookEndpointResponse:
        endpoint_id = _endpoint_id(request.endpoint_id)
        if not await self.webhooks.delete_endpoint(endpoint_id):
            await self.webhooks.endpoint(endpoint_id)  # NOT_FOUND, unless created meanwhile
        return epb.DeleteWebhookEndpointResponse()

    @unary
    async def RotateWebhookSecret(
        self, request: epb.RotateWebhookSecretRequest, context: Any
    ) -> epb.RotateWebhookSecretResponse:
        v = Violations()
        v.id("request_id", request.request_id, required=False)
        if v:
            raise errors.invalid(v)
        endpoint, secret = await self.webhooks.rotate_secret(
            _endpoint_id(request.endpoint_id), request.request_id
        )
        self.dispatcher.endpoints_changed()  # sign with both secrets from now on
        return epb.RotateWebhookSecretResponse(endpoint=convert.endpoint(endpoint), secret=secret)

    @unary
    async def ListDeliveries(
        self, request: epb.ListDeliveriesRequest, context: Any
    ) -> epb.ListDeliveriesResponse:
        v = Violations()
        if not request.endpoint_id and not request.event_id:
            v.add("endpoint_id", "endpoint_id or event_id is required")
        if request.endpoint_id:
            _endpoint_id(request.endpoint_id)
        if request.event_id and (
            len(request.event_id) > 200
            or (parse_event_id(request.event_id) is None
                and not request.event_id.startswith("evt_test_"))
        ):  # fmt: skip
            v.add("event_id", "not an event id (evt_...)")
        if v:
            raise errors.invalid(v)
        size = self.paging.size(request.page_size)
        key = ("deliveries", request.endpoint_id, request.event_id)
        before = self.paging.position(request.page_token, key, (int, int))
        found = await self.delivery_log.attempts(
            request.endpoint_id,
            request.event_id,
            size + 1,
            (before[0], before[1]) if before else None,
        )
        shown, token = self.paging.page(found, size, key, lambda a: [a.delivery_id, a.attempt])
        return epb.ListDeliveriesResponse(
            attempts=[convert.attempt(a) for a in shown], next_page_token=token
        )

    @unary
    async def ReplayEvents(
        self, request: epb.ReplayEventsRequest, context: Any
    ) -> epb.ReplayEventsResponse:
        v = Violations()
        v.id("request_id", request.request_id, required=False)
        has_time = request.HasField("start_time")
        if has_time == bool(request.event_ids):
            v.add("start_time", "give start_time or event_ids (one of them)")
        if len(request.event_ids) > 1000:
            v.add("event_ids", "at most 1000")
        for i, event_id in enumerate(request.event_ids):
            if parse_event_id(event_id) is None:
                v.add(f"event_ids[{i}]", f"{event_id[:80]!r} is not an event id (evt_...)")
        since = None
        if has_time:
            try:
                since = convert.from_ts(request.start_time)
            except (ValueError, OverflowError):
                v.add("start_time", "not a valid timestamp")
        if v:
            raise errors.invalid(v)
        endpoint = await self.webhooks.endpoint(_endpoint_id(request.endpoint_id))
        queued = await self.delivery_log.replay(
            endpoint,
            since,
            list(request.event_ids),
            request.request_id,
            fingerprint("replay", since, sorted(request.event_ids)),
        )
        self.dispatcher.wake()
        return epb.ReplayEventsResponse(queued=queued)

    @unary
    async def SendTestEvent(
        self, request: epb.SendTestEventRequest, context: Any
    ) -> epb.SendTestEventResponse:
        endpoint = await self.webhooks.endpoint(_endpoint_id(request.endpoint_id))
        attempt = await self.dispatcher.send_test(endpoint)
        return epb.SendTestEventResponse(attempt=convert.attempt(attempt))


def _endpoint_id(value: str, field: str = "endpoint_id") -> str:
    if not value or len(value) > 64 or not value.isascii() or not value.isprintable():
        raise errors.invalid_field(field, "required: an endpoint id (ep_...)")
    return value


def _url(v: Violations, url: str, field: str = "url") -> None:
    if not url:
        v.add(field, "required: an http or https URL")
        return
    if len(url) > MAX_URL:
        v.add(field, f"at most {MAX_URL} characters")
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        v.add(field, "not a URL")
        return
    if parts.scheme not in ("http", "https"):
        v.add(field, "must be an http or https URL")
    elif not parts.hostname:
        v.add(field, "must name a host")
    elif parts.username is not None or parts.password is not None:
        v.add(field, "must not carry credentials (user:password@); authenticate by signature")
    elif not url.isascii() or not url.isprintable() or " " in url:
        v.add(field, "must be printable ASCII without spaces (percent-encode the rest)")


def _types(v: Violations, field: str, values: Any) -> None:
    if len(values) > MAX_FILTER:
        v.add(field, f"at most {MAX_FILTER}")
        return
    for i, t in enumerate(values):
        if t not in types.KNOWN:
            v.add(
                f"{field}[{i}]", f"unknown event type {t[:80]!r}; known: {', '.join(types.TYPES)}"
            )


def _workspaces(v: Violations, values: Any, field: str = "workspace_ids") -> None:
    if len(values) > 1000:
        v.add(field, "at most 1000")
        return
    for i, w in enumerate(values):
        v.id(f"{field}[{i}]", w)
