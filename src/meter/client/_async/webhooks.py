"""The Events service: the outbox's events, webhook endpoints and their deliveries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime

from meter.client import requests as rq
from meter.client._async.transport import AsyncTransport
from meterpb.v1 import events_pb2 as epb


class AsyncEventCalls(AsyncTransport):
    """The Events service: the outbox's events, webhook endpoints and deliveries."""

    async def list_events(
        self,
        workspace: str = "",
        *,
        types: Iterable[str] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> epb.ListEventsResponse:
        """One page of events, oldest first (all workspaces' without `workspace`).

        `next_page_token` is always set: list again with it to get what came after.
        """
        request = epb.ListEventsRequest(
            workspace_id=workspace, types=list(types), page_size=page_size, page_token=page_token
        )
        return await self._call(self._events.ListEvents, request)

    async def events(
        self, workspace: str = "", *, types: Iterable[str] = (), after: str = ""
    ) -> AsyncIterator[epb.Event]:
        """Every event available now after `after` (a next_page_token), oldest first."""
        types, token = tuple(types), after
        while True:
            page = await self.list_events(workspace, types=types, page_size=1000, page_token=token)
            if not page.events:
                return
            for event in page.events:
                yield event
            token = page.next_page_token

    async def create_webhook_endpoint(
        self,
        url: str,
        *,
        event_types: Iterable[str] = (),
        workspace_ids: Iterable[str] = (),
        description: str = "",
        request_id: str | None = None,
    ) -> epb.CreateWebhookEndpointResponse:
        """A new endpoint and its signing secret (the only answer that carries it).

        Empty `event_types` / `workspace_ids`: every type / workspace. Without a request id
        one is made for this call, so its retries create one endpoint.
        """
        request = epb.CreateWebhookEndpointRequest(
            url=url,
            event_types=list(event_types),
            workspace_ids=list(workspace_ids),
            description=description,
            request_id=request_id or rq.new_request_id("webhook"),
        )
        return await self._call(self._events.CreateWebhookEndpoint, request)

    async def list_webhook_endpoints(self) -> list[epb.WebhookEndpoint]:
        """Every webhook endpoint (without secrets)."""
        request = epb.ListWebhookEndpointsRequest()
        return list((await self._call(self._events.ListWebhookEndpoints, request)).endpoints)

    async def get_webhook_endpoint(self, endpoint_id: str) -> epb.WebhookEndpoint:
        """One webhook endpoint (without its secret)."""
        request = epb.GetWebhookEndpointRequest(endpoint_id=endpoint_id)
        return await self._call(self._events.GetWebhookEndpoint, request)

    async def update_webhook_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Iterable[str] | None = None,
        workspace_ids: Iterable[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> epb.WebhookEndpoint:
        """Change the fields given (not None); the others stay as they are.

        Raises:
            ValueError: nothing to change.
        """
        endpoint = epb.WebhookEndpoint(endpoint_id=endpoint_id)
        # The update_mask names the arguments given, so that the server leaves the rest.
        paths = []
        if url is not None:
            endpoint.url = url
            paths.append("url")
        if description is not None:
            endpoint.description = description
            paths.append("description")
        if event_types is not None:
            endpoint.event_types.extend(event_types)
            paths.append("event_types")
        if workspace_ids is not None:
            endpoint.workspace_ids.extend(workspace_ids)
            paths.append("workspace_ids")
        if enabled is not None:
            endpoint.enabled = enabled
            paths.append("enabled")
        if not paths:
            raise ValueError(
                "nothing to change: give url, event_types, workspace_ids, description or enabled"
            )
        request = epb.UpdateWebhookEndpointRequest(endpoint=endpoint)
        request.update_mask.paths.extend(paths)
        return await self._call(self._events.UpdateWebhookEndpoint, request)

    async def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        """Delete an endpoint and stop its deliveries."""
        request = epb.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id)
        await self._call(self._events.DeleteWebhookEndpoint, request)

    async def rotate_webhook_secret(
        self, endpoint_id: str, *, request_id: str | None = None
    ) -> epb.RotateWebhookSecretResponse:
        """A new signing secret; for 24 hours deliveries are signed with both."""
        request = epb.RotateWebhookSecretRequest(
            endpoint_id=endpoint_id, request_id=request_id or rq.new_request_id("rotate")
        )
        return await self._call(self._events.RotateWebhookSecret, request)

    async def list_deliveries(
        self,
        endpoint_id: str = "",
        *,
        event_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> epb.ListDeliveriesResponse:
        """One page of delivery attempts to an endpoint and/or of an event, newest first."""
        request = epb.ListDeliveriesRequest(
            endpoint_id=endpoint_id, event_id=event_id, page_size=page_size, page_token=page_token
        )
        return await self._call(self._events.ListDeliveries, request)

    async def replay_events(
        self,
        endpoint_id: str,
        *,
        since: datetime | None = None,
        event_ids: Iterable[str] = (),
        request_id: str | None = None,
    ) -> int:
        """Deliver again, with their ids, the endpoint's events `since` a time or the
        `event_ids` given (exactly one of them); returns the deliveries queued."""
        ids = list(event_ids)
        if (since is None) == (not ids):
            raise ValueError("replay takes since or event_ids, exactly one")
        request = epb.ReplayEventsRequest(
            endpoint_id=endpoint_id,
            event_ids=ids,
            request_id=request_id or rq.new_request_id("replay"),
        )
        if since is not None:
            request.start_time.CopyFrom(rq.timestamp(since))
        return (await self._call(self._events.ReplayEvents, request)).queued

    async def send_test_event(self, endpoint_id: str) -> epb.DeliveryAttempt:
        """Deliver a webhook.test event to the endpoint now; returns the attempt."""
        request = epb.SendTestEventRequest(endpoint_id=endpoint_id)
        return (await self._call(self._events.SendTestEvent, request)).attempt
