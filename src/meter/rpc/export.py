"""ExportJournal (DESIGN.md §16): every workspace's journal, oldest first, as a resumable feed.
MeterServicer inherits it.

A page token holds the key of the last entry answered, (create_time in microseconds,
workspace_id, entry_id), and the digest of the database that made it: a token from another
Meter database would otherwise be read as a position in this one and silently skip or repeat
entries, so it is refused (INVALID_ARGUMENT on page_token). Roles are ListEvents' (app,
billing, admin); a principal limited to some workspaces is refused, as it is for the whole
event feed: the export is of every workspace.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from meter import errors
from meter.rpc import convert
from meter.rpc.handlers import unary
from meter.rpc.paging import Paging
from meter.storage.export import JournalExport, Key
from meterpb.v1 import meter_pb2 as pb

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TOKEN_KEY = ("export-journal",)


def micros(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


class ExportRpcs:
    export: JournalExport
    paging: Paging
    export_lag_s: float

    @unary
    async def ExportJournal(
        self, request: pb.ExportJournalRequest, context: Any
    ) -> pb.ExportJournalResponse:
        size = self.paging.size(request.page_size)
        start = convert.from_ts(request.start_time) if request.HasField("start_time") else None
        identity = await self.export.identity()
        after = self._after(request.page_token, identity)
        page = await self.export.page(after, start, size, self.export_lag_s)
        if page.entries:
            ws, last = page.entries[-1]
            after = (last.created_at, ws, last.entry_id)
        if after is None:
            # Nothing answered from the start: continue from the start next time too.
            token = self.paging.token(["j", None, identity], TOKEN_KEY)  # type: ignore[list-item]
        else:
            token = self.paging.token(
                ["j", [micros(after[0]), after[1], after[2]], identity],  # type: ignore[list-item]
                TOKEN_KEY,
            )
        return pb.ExportJournalResponse(
            entries=[convert.entry(ws, e) for ws, e in page.entries],
            next_page_token=token,
            horizon=convert.ts(page.horizon),
        )

    def _after(self, token: str, identity: str) -> Key | None:
        """The key a page token continues after (None: from the start).

        Raises:
            MeterError: INVALID_ARGUMENT on page_token: not one of ExportJournal's, or made
                by another database.
        """
        value = self.paging.raw(token, TOKEN_KEY)
        after: Key | None
        match value:
            case None:
                return None
            case ["j", None, str(made_by)]:
                after = None
            case ["j", [int(t), str(w), int(e)], str(made_by)] if t >= 0 and e >= 0:
                after = EPOCH + timedelta(microseconds=t), w, e
            case _:
                raise errors.invalid_field("page_token", "not a page token of ExportJournal")
        if made_by != identity:
            raise errors.invalid_field(
                "page_token",
                "was made by another Meter database; start a new export from a time",
            )
        return after
