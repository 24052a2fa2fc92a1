"""Reads: the balance, the journal, holds, usage, the audit, and WatchBalance."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

import grpc

from meter.client import requests as rq
from meter.client._async.transport import AsyncTransport
from meter.client.errors import from_rpc_error
from meter.client.tracecontext import with_trace
from meterpb.v1 import meter_pb2 as pb


class AsyncReadCalls(AsyncTransport):
    """Balances, the journal, holds, usage, audit and balance watches."""

    async def balance(self, workspace: str) -> pb.Balance:
        """The workspace's balance (a new workspace reads as zero)."""
        request = pb.GetBalanceRequest(workspace_id=workspace)
        return await self._call(self._meter.GetBalance, request)

    async def list_transactions(
        self,
        workspace: str,
        *,
        kinds: Iterable[str | int] = (),
        operations: Iterable[str] = (),
        actor: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListTransactionsResponse:
        """One page of journal entries, newest first (kinds: GRANT, CHARGE, ...)."""
        request = pb.ListTransactionsRequest(
            workspace_id=workspace,
            kinds=[rq.entry_kind(k) for k in kinds],
            operations=list(operations),
            actor_id=actor,
            page_size=page_size,
            page_token=page_token,
        )
        if since is not None:
            request.start_time.CopyFrom(rq.timestamp(since))
        if until is not None:
            request.end_time.CopyFrom(rq.timestamp(until))
        return await self._call(self._meter.ListTransactions, request)

    async def export_journal(
        self, *, since: datetime | None = None, page_size: int = 0, page_token: str = ""
    ) -> pb.ExportJournalResponse:
        """One page of every workspace's journal, oldest first (by create time, workspace,
        entry); its next_page_token resumes after it, also when it is empty."""
        request = pb.ExportJournalRequest(page_size=page_size, page_token=page_token)
        if since is not None:
            request.start_time.CopyFrom(rq.timestamp(since))
        return await self._call(self._meter.ExportJournal, request)

    async def history(
        self,
        workspace: str,
        *,
        kinds: Iterable[str | int] = (),
        operations: Iterable[str] = (),
        actor: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[pb.JournalEntry]:
        """Every matching journal entry, newest first, fetching pages as it goes."""
        kinds, operations, token = tuple(kinds), tuple(operations), ""
        while True:
            page = await self.list_transactions(
                workspace, kinds=kinds, operations=operations, actor=actor, since=since,
                until=until, page_size=page_size, page_token=token,
            )  # fmt: skip
            for entry in page.entries:
                yield entry
            token = page.next_page_token
            if not token:
                return

    async def list_holds(
        self,
        workspace: str,
        *,
        states: Iterable[str | int] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListHoldsResponse:
        """One page of the workspace's holds (states: HELD, COMMITTED, ...; none: all)."""
        request = pb.ListHoldsRequest(
            workspace_id=workspace,
            states=[rq.hold_state(s) for s in states],
            page_size=page_size,
            page_token=page_token,
        )
        return await self._call(self._meter.ListHolds, request)

    async def holds(
        self, workspace: str, *, states: Iterable[str | int] = ()
    ) -> AsyncIterator[pb.Hold]:
        """Every hold of the workspace in `states`, fetching pages as it goes."""
        states, token = tuple(states), ""
        while True:
            page = await self.list_holds(workspace, states=states, page_size=1000, page_token=token)
            for hold in page.holds:
                yield hold
            token = page.next_page_token
            if not token:
                return

    async def usage(
        self,
        workspace: str,
        by: str,
        *,
        label_key: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pb.GetUsageResponse:
        """Credits used and counts grouped `by` operation, actor, day, week or label (the
        values of the label `label_key`: project, team, ...). By actor or label each row
        carries what the value holds now and the budgets that apply to it.

        Raises:
            InvalidArgument: by label without a valid label_key.
            ValueError: an unknown grouping.
        """
        request = pb.GetUsageRequest(
            workspace_id=workspace, group_by=rq.usage_grouping(by), label_key=label_key
        )
        if since is not None:
            request.start_time.CopyFrom(rq.timestamp(since))
        if until is not None:
            request.end_time.CopyFrom(rq.timestamp(until))
        return await self._call(self._meter.GetUsage, request)

    async def audit(self, workspace: str = "") -> pb.AuditResponse:
        """Recompute balances from the journal (one workspace, or all) and list discrepancies."""
        return await self._call(self._meter.Audit, pb.AuditRequest(workspace_id=workspace))

    async def watch_balance(self, workspace: str) -> AsyncIterator[pb.WatchBalanceResponse]:
        """The balance now, then one message per change or alert, until the loop stops.

        Raises:
            MeterError: the call failed (NotFound for an unknown workspace, Unavailable when
                the replica drains: watch again, and the balance comes first).
        """
        call: Any = self._meter.WatchBalance(
            pb.WatchBalanceRequest(workspace_id=workspace), metadata=with_trace(self._metadata)
        )
        try:
            async for message in call:
                yield message
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()
