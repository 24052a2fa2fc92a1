"""The history (journal entries, newest first) with filters and keyset pages."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.responses import Response, StreamingResponse

from meter.console.format import enum, iso
from meter.console.web import Ctx, gated
from meterpb.v1 import meter_pb2 as pb

KINDS = ("grant", "charge", "expire", "adjust", "refund")
PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class Filters:
    """The history's filters as the page's query string has them."""

    kind: str = ""
    operation: str = ""
    actor: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def of(cls, ctx: Ctx) -> Filters:
        kind = ctx.field("kind").lower()
        return cls(
            kind if kind in KINDS else "",
            ctx.field("operation"),
            ctx.field("actor"),
            ctx.field("since"),
            ctx.field("until"),
        )

    def query(self) -> dict[str, object]:
        """Keyword arguments of list_transactions / history (ValueError on a bad date)."""
        return {
            "kinds": [self.kind] if self.kind else [],
            "operations": [self.operation] if self.operation else [],
            "actor": self.actor,
            "since": parse_time(self.since, end=False),
            "until": parse_time(self.until, end=True),
        }

    def params(self) -> str:
        from urllib.parse import urlencode

        return urlencode({k: v for k, v in vars_of(self).items() if v})


def vars_of(f: Filters) -> dict[str, str]:
    return {"kind": f.kind, "operation": f.operation, "actor": f.actor, "since": f.since,
            "until": f.until}  # fmt: skip


def parse_time(text: str, *, end: bool) -> datetime | None:
    """A date (2025-06-01) or date-time; a date as `until` means the end of that day."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date such as 2025-06-01") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if end and len(text) == 10:
        value += timedelta(days=1)
    return value


@gated("history")
async def history(ctx: Ctx) -> Response:
    """One page of ListTransactions under the filters; its next page by keyset token."""
    filters = Filters.of(ctx)
    try:
        query = filters.query()
    except ValueError as e:
        return ctx.render("history.html", 400, tab="history", filters=filters, kinds=KINDS,
                          entries=[], next_token="", error=str(e))  # fmt: skip
    found = await ctx.client.list_transactions(
        ctx.ws,
        page_size=PAGE_SIZE,
        page_token=ctx.field("page_token"),
        **query,  # type: ignore[arg-type]
    )
    return ctx.render(
        "history.html", tab="history", filters=filters, kinds=KINDS,
        entries=list(found.entries), next_token=found.next_page_token,
        first_page=not ctx.field("page_token"), error="",
    )  # fmt: skip


CSV_COLUMNS = ("time", "kind", "amount", "balance_after", "operation", "actor", "request_id",
               "reason", "package", "category", "shortfall", "late", "entry_id")  # fmt: skip


def csv_row(e: pb.JournalEntry) -> list[object]:
    return [
        iso(e.create_time), enum(e.kind, pb.EntryKind, "ENTRY_KIND_"), e.amount,
        e.balance_after, e.operation, e.actor_id, e.request_id, e.reason, e.package,
        enum(e.category, pb.CreditCategory, "CREDIT_CATEGORY_") if e.category else "",
        e.shortfall, "yes" if e.late else "", e.entry_id,
    ]  # fmt: skip


@gated("history")
async def history_csv(ctx: Ctx) -> Response:
    """Every entry under the filters as CSV, streamed page by page."""
    filters = Filters.of(ctx)
    try:
        query = filters.query()
    except ValueError as e:
        return Response(str(e), 400, media_type="text/plain")
    # Ask for the first page before answering, so a refusal is a page and not a cut-off file.
    first = await ctx.client.list_transactions(ctx.ws, page_size=1000, **query)  # type: ignore[arg-type]

    async def rows() -> AsyncIterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        page_, token = first, first.next_page_token
        while True:
            for e in page_.entries:
                writer.writerow(csv_row(e))
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            if not token:
                return
            page_ = await ctx.client.list_transactions(
                ctx.ws,
                page_size=1000,
                page_token=token,
                **query,  # type: ignore[arg-type]
            )
            token = page_.next_page_token

    name = f"{ctx.ws}-history.csv"
    return StreamingResponse(
        rows(), media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )  # fmt: skip
