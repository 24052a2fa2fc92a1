"""The webhook dispatcher: every replica runs one, and together they deliver each event to
each endpoint that wants it, at least once.

A round turns new events into pending deliveries (each endpoint's feed position is leased
with FOR UPDATE SKIP LOCKED, see EventsRepo.fan_out), then leases due deliveries endpoint by
endpoint and sends each as its own task. A lease is the delivery's next attempt time pushed
past the attempt's timeout, so a replica that dies mid-attempt leaves the delivery to whoever
finds it due again. Each endpoint has a few attempts in flight at most (PER_ENDPOINT), and
every attempt is bounded in time (the timeout, whatever the receiver does) and in memory
(answers are read up to RESPONSE_LIMIT bytes): a slow or dead endpoint only ever occupies its
own slots, never another endpoint's and never the ledger's (the dispatcher has its own
connections and never takes a workspace lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import httpx
import orjson
import structlog

from meter.errors import MeterError
from meter.events import types
from meter.events.model import Attempt, Claimed, DeliveryState, Endpoint
from meter.storage.deliveries_repo import DeliveriesRepo
from meter.storage.events_repo import EventsRepo
from meter.storage.webhooks_repo import WebhooksRepo
from meter.tasks import stop_if_cancelled
from meter.webhooks import sign

log = structlog.get_logger("meter.webhooks")

# DESIGN.md §9: retried after these delays, then the attempt chain fails.
DEFAULT_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DEFAULT_DISABLE_AFTER_S = 5 * 24 * 3600.0
TIMEOUT_S = 15.0
PER_ENDPOINT = 16
TOTAL = 128
# How much of an answer is read: enough for a log line, never a receiver's whole body.
RESPONSE_LIMIT = 4096
# A round runs at least this often (events from other replicas wake it sooner by NOTIFY).
POLL_S = 1.0
PURGE_EVERY_S = 600.0
# Events deleted per statement, and statements per purge: a backlog never makes one long lock.
PURGE_BATCH = 10_000
PURGE_ROUNDS = 20
BACKLOG_EVERY_S = 5.0
USER_AGENT = "meter-webhooks/1"


def body_of(type_: str, created_at: datetime, data: str) -> bytes:
    """The Standard Webhooks payload, with the event's data object as stored."""
    head = orjson.dumps({"type": type_, "timestamp": created_at.isoformat()})
    return head[:-1] + b',"data":' + data.encode() + b"}"


class Dispatcher:
    def __init__(
        self,
        deliveries: DeliveriesRepo,
        webhooks: WebhooksRepo,
        events: EventsRepo,
        *,
        schedule_s: Sequence[float] = DEFAULT_SCHEDULE_S,
        disable_after_s: float = DEFAULT_DISABLE_AFTER_S,
        retention_s: float = 30 * 24 * 3600.0,
        timeout_s: float = TIMEOUT_S,
        per_endpoint: int = PER_ENDPOINT,
        observe: Callable[[str, float | None], None] | None = None,
        observe_backlog: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        self.repo = deliveries
        self.webhooks = webhooks
        self.events = events
        self.schedule_s = tuple(schedule_s)
        self.disable_after_s = disable_after_s
        self.retention_s = retention_s
        self.timeout_s = timeout_s
        self.per_endpoint = per_endpoint
        self.observe = observe
        self.observe_backlog = observe_backlog
        self._wake = asyncio.Event()
        self._inflight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        # New events to fan out (a freed slot alone only needs a claim), and when the
        # endpoints were last read (their secrets and URLs, at most POLL_S old).
        self._fan_out = True
        self._last_fan_out = 0.0
        self._endpoints: dict[str, Endpoint] = {}
        self._endpoints_at = 0.0

    def wake(self) -> None:
        """Events were written (here or by another replica), or deliveries queued: look soon."""
        self._fan_out = True
        self._wake.set()

    def endpoints_changed(self) -> None:
        """This replica created or changed an endpoint: read the endpoints again now (other
        replicas' changes show within POLL_S)."""
        self._endpoints_at = 0.0
        self.wake()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s, connect=min(5.0, self.timeout_s)),
                limits=httpx.Limits(
                    max_connections=TOTAL,
                    # httpcore checks every idle connection on each request: keep few.
                    max_keepalive_connections=PER_ENDPOINT,
                    keepalive_expiry=30,
                ),
                follow_redirects=False,
                trust_env=False,
                headers={"user-agent": USER_AGENT, "content-type": "application/json"},
            )
        return self._client

    async def run(self) -> None:
        last_purge = last_backlog = 0.0
        try:
            while True:
                self._wake.clear()
                wait = POLL_S
                try:
                    wait = await self.round()
                    now = time.monotonic()
                    if now - last_purge >= PURGE_EVERY_S:
                        last_purge = now
                        for _ in range(PURGE_ROUNDS):
                            if await self.events.purge(self.retention_s) < PURGE_BATCH:
                                break
                    if self.observe_backlog is not None and now - last_backlog >= BACKLOG_EVERY_S:
                        last_backlog = now
                        self.observe_backlog(await self.repo.backlog())
                except MeterError as e:
                    log.warning("dispatch.failed", reason=e.reason, error=e.message)
                except Exception:
                    log.exception("dispatch.crashed")
                stop_if_cancelled()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally
                # when the task is cancelled just as the event is set, and the drain waits
                # for this loop for ever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Abandon attempts under way (their leases run out and they are retried)."""
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def round(self) -> float:
        """Fan out, lease what is due, start sending; returns the seconds until the next
        delivery falls due (at most POLL_S)."""
        now = time.monotonic()
        if self._fan_out or now - self._last_fan_out >= POLL_S:
            self._fan_out, self._last_fan_out = False, now
            await self.repo.fan_out()
        due = await self.repo.due()
        if not due:
            return POLL_S
        if now - self._endpoints_at >= POLL_S:
            found = await self.webhooks.endpoints(enabled_only=True)
            self._endpoints, self._endpoints_at = {e.endpoint_id: e for e in found}, now
        endpoints = self._endpoints
        wait = POLL_S
        # Long enough for the attempt and its record; a dead replica's lease runs out.
        lease_s = 2 * self.timeout_s + 5.0
        for endpoint_id, groups in due.items():
            endpoint = endpoints.get(endpoint_id)
            if endpoint is None:
                continue
            for feed_key, in_s in sorted(groups.items(), key=lambda g: g[1]):
                free = self.per_endpoint - self._inflight[endpoint_id]
                free = min(free, TOTAL - sum(self._inflight.values()))
                if free <= 0:
                    break
                if in_s > 0:
                    wait = min(wait, in_s)
                    continue
                for claimed in await self.repo.claim(endpoint_id, feed_key, free, lease_s):
                    self._start(endpoint, claimed)
        return max(wait, 0.01)

    def _start(self, endpoint: Endpoint, claimed: Claimed) -> None:
        self._inflight[endpoint.endpoint_id] += 1
        task = asyncio.create_task(self._deliver(endpoint, claimed))
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._inflight[endpoint.endpoint_id] -= 1
            if self._inflight[endpoint.endpoint_id] <= 0:
                del self._inflight[endpoint.endpoint_id]
            self._wake.set()  # a slot is free

        task.add_done_callback(done)

    async def _deliver(self, endpoint: Endpoint, claimed: Claimed) -> None:
        event = claimed.event
        status, error, latency_ms = await self.send(
            endpoint, event.event_id, event.type, event.created_at, event.data
        )
        retry_in = None
        if error and claimed.attempt <= len(self.schedule_s):
            retry_in = self.schedule_s[claimed.attempt - 1]
        try:
            state, disabled = await self.repo.record(
                endpoint, claimed, status, error, latency_ms, retry_in, self.disable_after_s
            )
        except MeterError as e:
            # The lease runs out and the delivery is attempted again: at least once.
            log.warning("delivery.unrecorded", reason=e.reason, endpoint_id=endpoint.endpoint_id)
            return
        if self.observe is not None:
            if state is DeliveryState.DELIVERED:
                age = (datetime.now(UTC) - event.created_at).total_seconds()
                self.observe("delivered", max(age, 0.0))
            else:
                self.observe("failed" if state is DeliveryState.PENDING else "exhausted", None)
        if error:
            log.info(
                "delivery.failed",
                endpoint_id=endpoint.endpoint_id,
                event_id=event.event_id,
                attempt=claimed.attempt,
                status=status,
                error=error,
                retry_in_s=retry_in,
            )
        if disabled:
            log.warning("webhook.endpoint_disabled", endpoint_id=endpoint.endpoint_id)

    async def send(
        self, endpoint: Endpoint, msg_id: str, type_: str, created_at: datetime, data: str
    ) -> tuple[int, str, int]:
        """One signed POST; returns (HTTP status or 0, error or '', latency in ms)."""
        body = body_of(type_, created_at, data)
        stamp = int(time.time())
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(msg_id, stamp, body, endpoint.secrets),
        }
        started = time.monotonic()
        status, error = 0, ""
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._http().stream(
                    "POST", endpoint.url, content=body, headers=headers
                ) as answer:
                    status = answer.status_code
                    read = 0
                    async for chunk in answer.aiter_raw():
                        read += len(chunk)
                        if read >= RESPONSE_LIMIT:
                            break
        except TimeoutError:
            error = f"no answer within {self.timeout_s:g} s"
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"[:300] if str(e) else type(e).__name__
        latency_ms = int((time.monotonic() - started) * 1000)
        if not error and not 200 <= status < 300:
            redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
            error = f"HTTP {status}{redirect}"
        return status, error, latency_ms

    async def send_test(self, endpoint: Endpoint) -> Attempt:
        """SendTestEvent: a webhook.test event to one endpoint now, logged like any attempt."""
        now = datetime.now(UTC)
        msg_id = "evt_test_" + secrets.token_hex(8)
        data = orjson.dumps(
            {"workspace_id": "", "endpoint_id": endpoint.endpoint_id, "message": "a test event"}
        ).decode()
        status, error, latency_ms = await self.send(endpoint, msg_id, types.WEBHOOK_TEST, now, data)
        return await self.repo.record_test(
            endpoint, msg_id, types.WEBHOOK_TEST, status, error, latency_ms
        )
