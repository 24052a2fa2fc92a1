"""A workspace's pages: the live balance card, lots, holds and the audit."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import PlainTextResponse, Response, StreamingResponse

from meter.client import MeterError, Unavailable
from meter.console.format import credits, enum
from meter.console.problems import explain
from meter.console.web import Ctx, gated, page
from meterpb.v1 import meter_pb2 as pb

HOLD_STATES = ("held", "committed", "released", "expired")


@gated("balance")
async def overview(ctx: Ctx) -> Response:
    """The balance card (live when the role may watch) and the latest entries."""
    balance = await ctx.client.balance(ctx.ws)
    recent: list[pb.JournalEntry] = []
    if ctx.access.may("history"):
        recent = list((await ctx.client.list_transactions(ctx.ws, page_size=10)).entries)
    return ctx.render("workspace.html", tab="overview", b=balance, recent=recent)


def _sse(event: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n".encode()


def _alert_text(alert: pb.AlertEvent) -> str:
    kind = enum(alert.kind, pb.AlertKind, "ALERT_KIND_")
    if alert.kind == pb.ALERT_KIND_INSUFFICIENT_CREDITS:
        return (
            f"A reservation of {credits(alert.required)} credits for {alert.operation or 'a job'}"
            f" was refused: {credits(alert.available)} available."
        )
    return f"Balance {kind}: {credits(alert.available)} available (threshold {alert.threshold:,})."


@page
async def live(ctx: Ctx) -> Response:
    """Server-Sent Events: the balance card's HTML after every change, and alerts."""
    if not ctx.access.may("watch"):
        return PlainTextResponse("live updates are not allowed for this role", 403)
    card = ctx.console.templates.get_template("_balance.html")
    ws = ctx.ws

    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        try:
            async for message in ctx.client.watch_balance(ws):
                if message.HasField("balance"):
                    yield _sse("balance", card.render(b=message.balance, live=True))
                else:
                    yield _sse("alert", _alert_text(message.alert))
        except Unavailable:
            # The replica is draining: the browser reconnects and gets the balance first.
            yield _sse("status", "reconnecting")
        except MeterError as e:
            problem = explain(e, target=ctx.console.settings.target, role=ctx.access.role,
                              workspace=ws)  # fmt: skip
            yield _sse("problem", f"{problem.title}: {problem.detail}")

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


@gated("balance")
async def lots(ctx: Ctx) -> Response:
    """Lots as the API shows them: available by category, expiring soon, pending, grants."""
    balance = await ctx.client.balance(ctx.ws)
    grants: list[pb.JournalEntry] = []
    if ctx.access.may("history"):
        page_ = await ctx.client.list_transactions(ctx.ws, kinds=["grant"], page_size=100)
        grants = list(page_.entries)
    return ctx.render("lots.html", tab="lots", b=balance, grants=grants)


@gated("holds")
async def holds(ctx: Ctx) -> Response:
    """Holds by state, a keyset page at a time."""
    state = ctx.field("state", "held")
    states = [state] if state in HOLD_STATES else []
    found = await ctx.client.list_holds(
        ctx.ws, states=states, page_size=50, page_token=ctx.field("page_token")
    )
    return ctx.render(
        "holds.html", tab="holds", state=state if states else "all", states=HOLD_STATES,
        holds=list(found.holds), next_token=found.next_page_token,
    )  # fmt: skip


@gated("audit")
async def audit(ctx: Ctx) -> Response:
    """The server's audit of one workspace: every discrepancy, or that there is none."""
    result = await ctx.client.audit(ctx.ws)
    return ctx.render("audit.html", tab="audit", result=result)
