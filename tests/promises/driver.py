"""The real side of the model-based test: a Meter server over gRPC, unary and Stream, read back
as a user reads it.

The state machine (test_promises.py) runs in a thread of its own with blocking stubs; the
server runs on the test session's event loop. The server's ledger clock is pinned to the
model's time, and the sweeper, whose own rounds are an hour apart, is run by `sweep()` right
after the clock moves: what a step sees never depends on when a background task ran.
"""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import grpc
from google.rpc import error_details_pb2

from meter.app import App
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import events_pb2_grpc, meter_pb2_grpc
from meterpb.v1 import meter_pb2 as pb
from tests.promises.model import RefusedError

CODES = {c.value[0]: c.name for c in grpc.StatusCode}


def refusal(code: str, details: list[Any]) -> RefusedError:
    reason = ""
    for d in details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            reason = info.reason
    return RefusedError(code, reason)


def refused_call(e: grpc.RpcError) -> RefusedError:
    from grpc_status import rpc_status

    status = rpc_status.from_call(e)  # type: ignore[arg-type]
    return refusal(e.code().name, list(status.details) if status is not None else [])


class Stream:
    """One long-lived Meter.Stream: `send` puts one message of items and returns each item's
    result, matched by (workspace, request id)."""

    def __init__(self, stub: meter_pb2_grpc.MeterStub) -> None:
        self._out: queue.Queue[pb.StreamRequest | None] = queue.Queue()
        self._responses = stub.Stream(self._requests())

    def _requests(self) -> Iterator[pb.StreamRequest]:
        while (message := self._out.get()) is not None:
            yield message

    def send(self, items: list[pb.StreamItem]) -> list[pb.StreamResult]:
        def key(item: pb.StreamItem) -> tuple[str, str]:
            r = getattr(item, item.WhichOneof("item") or "")
            return (r.workspace_id, r.request_id)

        want = [key(i) for i in items]
        assert len(set(want)) == len(want), "one item per request id in a message"
        self._out.put(pb.StreamRequest(items=items))
        got: dict[tuple[str, str], pb.StreamResult] = {}
        while len(got) < len(want):
            response = next(self._responses)
            for r in response.results:
                got[(r.workspace_id, r.request_id)] = r
        return [got[k] for k in want]

    def close(self) -> None:
        self._out.put(None)
        self._responses.cancel()


class Server:
    """The servers under test (replicas on one database), reached from the state machine's
    thread. Calls take turns between the replicas: every answer must be the same whichever
    one gives it."""

    def __init__(self, apps: list[App], loop: asyncio.AbstractEventLoop) -> None:
        self.apps, self.loop = apps, loop
        self.channels = [grpc.insecure_channel(f"127.0.0.1:{a.port}") for a in apps]
        self.stubs = [meter_pb2_grpc.MeterStub(c) for c in self.channels]
        self.events_stubs = [events_pb2_grpc.EventsStub(c) for c in self.channels]
        self._streams: dict[int, Stream] = {}
        self._turn = 0

    def _next(self) -> int:
        self._turn += 1
        return self._turn % len(self.apps)

    @property
    def stub(self) -> meter_pb2_grpc.MeterStub:
        return self.stubs[self._next()]

    @property
    def events(self) -> events_pb2_grpc.EventsStub:
        return self.events_stubs[self._next()]

    @property
    def stream(self) -> Stream:
        i = self._next()
        if i not in self._streams:
            self._streams[i] = Stream(self.stubs[i])
        return self._streams[i]

    def close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        for channel in self.channels:
            channel.close()

    def pin(self, at: datetime | None) -> None:
        for app in self.apps:
            app.clock.pinned = at

    def sweep(self) -> None:
        """The sweeper's rounds until nothing is due (a round skips what another holds)."""
        for _ in range(50):
            app = self.apps[self._next()]
            due = asyncio.run_coroutine_threadsafe(app.sweeper.run_once(), self.loop)
            if due.result(timeout=30) == 0:
                return
        raise AssertionError("the sweeper kept finding work")

    def call(self, method: str, request: Any) -> Any:
        """A unary call; a refusal raises the model's RefusedError."""
        try:
            return getattr(self.stub, method)(request, timeout=30)
        except grpc.RpcError as e:
            raise refused_call(e) from None

    # What a user sees of a workspace.

    def balance(self, ws: str) -> pb.Balance:
        return self.call("GetBalance", pb.GetBalanceRequest(workspace_id=ws))

    def entries(self, ws: str) -> list[pb.JournalEntry]:
        found, token = [], ""
        while True:
            page = self.call(
                "ListTransactions",
                pb.ListTransactionsRequest(workspace_id=ws, page_size=1000, page_token=token),
            )
            found += list(page.entries)
            if not page.next_page_token:
                return found[::-1]
            token = page.next_page_token

    def alerts(self, ws: str) -> list[pb.AlertEvent]:
        found, token = [], ""
        while True:
            page = self.call(
                "ListAlerts",
                pb.ListAlertsRequest(workspace_id=ws, page_size=1000, page_token=token),
            )
            found += list(page.alerts)
            if not page.next_page_token:
                return found[::-1]
            token = page.next_page_token

    def events_of(self, ws: str, expected: int) -> list[tuple[int, str, dict[str, Any]]]:
        """(sequence, type, data) of a workspace's events in feed order, once the feed shows
        `expected` of them or more (an event is readable once every transaction older than
        its own has ended: milliseconds), or after 10 s."""
        deadline = time.monotonic() + 10
        while True:
            found = self._events_of(ws)
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.005)

    def _events_of(self, ws: str) -> list[tuple[int, str, dict[str, Any]]]:
        found, token = [], ""
        while True:
            page = self.events.ListEvents(
                epb.ListEventsRequest(workspace_id=ws, page_size=1000, page_token=token),
                timeout=30,
            )
            found += [(e.sequence, e.type, json.loads(e.data)) for e in page.events]
            if not page.events:
                return found
            token = page.next_page_token

    def usage(self, ws: str, by: int, label_key: str = "") -> pb.GetUsageResponse:
        return self.call(
            "GetUsage", pb.GetUsageRequest(workspace_id=ws, group_by=by, label_key=label_key)
        )

    def budgets(self, ws: str) -> list[pb.Budget]:
        return list(self.call("ListBudgets", pb.ListBudgetsRequest(workspace_id=ws)).budgets)

    def limits(self, ws: str) -> list[pb.MemberLimit]:
        return list(
            self.call("ListMemberLimits", pb.ListMemberLimitsRequest(workspace_id=ws)).limits
        )

    def topup(self, ws: str) -> pb.AutoTopUp:
        return self.call("GetAutoTopUp", pb.GetAutoTopUpRequest(workspace_id=ws))

    def audit(self, ws: str) -> list[pb.Discrepancy]:
        return list(self.call("Audit", pb.AuditRequest(workspace_id=ws)).discrepancies)
