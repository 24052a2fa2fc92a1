"""ExportJournal: every workspace's journal in (create_time, workspace_id, entry_id) order, as a
resumable feed that answers only entries older than the export lag (conftest lowers it to 1 s).
"""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import timestamp_pb2

from meter.rpc.export import TOKEN_KEY
from meter.rpc.paging import Paging
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb
from tests.conftest import EXPORT_LAG_S
from tests.support import eventually, fails, grant, rid


def key(e: pb.JournalEntry) -> tuple[int, str, int]:
    t = e.create_time
    return (t.seconds * 10**9 + t.nanos, e.workspace_id, int(e.entry_id))


async def entries_of(stub, workspaces: list[str]) -> list[pb.JournalEntry]:
    found: list[pb.JournalEntry] = []
    for ws in workspaces:
        page = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws))
        found.extend(page.entries)
    return sorted(found, key=key)


async def exported(stub, start: timestamp_pb2.Timestamp, page_size: int) -> list[pb.JournalEntry]:
    """Every entry the feed answers from `start`, page by page."""
    found: list[pb.JournalEntry] = []
    token = ""
    while True:
        page = await stub.ExportJournal(
            pb.ExportJournalRequest(page_size=page_size, page_token=token, start_time=start)
        )
        found.extend(page.entries)
        assert page.next_page_token
        token = page.next_page_token
        if len(page.entries) < page_size:
            return found


async def test_pages_follow_one_order_across_workspaces_and_resume_exactly(stub, ws):
    workspaces = [f"{ws}-b", f"{ws}-a", f"{ws}-c"]
    for w in workspaces:
        await grant(stub, w, 100)
        await stub.Charge(pb.ChargeRequest(workspace_id=w, request_id=rid(), amount=3))
    await grant(stub, workspaces[0], 5)
    mine = await entries_of(stub, workspaces)
    start = mine[0].create_time

    async def all_visible() -> list[pb.JournalEntry] | None:
        found = [e for e in await exported(stub, start, 1000) if e.workspace_id in workspaces]
        return found if len(found) == len(mine) else None

    whole = await eventually(all_visible, within=10 * EXPORT_LAG_S)
    assert [key(e) for e in mine] == [key(e) for e in whole]
    assert mine == whole  # every field, workspace_id included
    paged = [e for e in await exported(stub, start, 2) if e.workspace_id in workspaces]
    assert mine == paged


async def test_an_entry_is_answered_only_once_the_lag_has_passed_its_creation(stub, ws):
    created = (await grant(stub, ws, 10)).entry.create_time
    page = await stub.ExportJournal(pb.ExportJournalRequest(start_time=created))
    horizon = page.horizon.ToDatetime()
    assert horizon < created.ToDatetime() + timedelta(seconds=0.001)
    assert ws not in {e.workspace_id for e in page.entries}

    async def answered() -> bool:
        page = await stub.ExportJournal(pb.ExportJournalRequest(start_time=created))
        return ws in {e.workspace_id for e in page.entries}

    await eventually(answered, within=10 * EXPORT_LAG_S)


async def test_an_empty_page_returns_a_token_that_resumes_where_it_started(stub, ws):
    future = timestamp_pb2.Timestamp(seconds=4_000_000_000)
    page = await stub.ExportJournal(pb.ExportJournalRequest(start_time=future))
    assert [] == list(page.entries)
    again = await stub.ExportJournal(
        pb.ExportJournalRequest(start_time=future, page_token=page.next_page_token)
    )
    assert [] == list(again.entries)


async def test_tokens_of_another_database_another_query_or_none_at_all_are_refused(stub, events):
    paging = Paging()
    other_database = paging.token(["j", None, "000000000000"], TOKEN_KEY)  # type: ignore[list-item]
    events_token = (await events.ListEvents(epb.ListEventsRequest())).next_page_token
    for token, words in (
        (other_database, "another Meter database"),
        ("garbage!", "not a page token"),
        (paging.token(["j", ["x", 1, 2], "0"], TOKEN_KEY), "not a page token"),  # type: ignore[list-item]
        (events_token, "different query"),
    ):
        f = await fails(stub.ExportJournal(pb.ExportJournalRequest(page_token=token)))
        assert (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"]) == (f.code, f.fields)
        assert words in f.message


async def test_a_page_is_at_most_a_thousand_entries_and_a_negative_size_is_refused(stub):
    f = await fails(stub.ExportJournal(pb.ExportJournalRequest(page_size=-1)))
    assert (grpc.StatusCode.INVALID_ARGUMENT, ["page_size"]) == (f.code, f.fields)
    page = await stub.ExportJournal(pb.ExportJournalRequest(page_size=5000))
    assert len(page.entries) <= 1000
