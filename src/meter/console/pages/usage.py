"""Usage: credits used by member, by operation and by a label's values, the daily or weekly
trend as a chart, and the budgets that govern spend (DESIGN.md §13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.responses import Response

from meter.client import InvalidArgument
from meter.console import charts
from meter.console.format import day
from meter.console.pages.history import parse_time
from meter.console.web import Ctx, gated
from meterpb.v1 import meter_pb2 as pb

ACTOR_KEY = "actor_id"


@gated("usage")
async def usage(ctx: Ctx) -> Response:
    """Usage in the chosen range by member and operation (and by the label `label`, when one
    is asked for), the trend, and the workspace's budgets as they stand now."""
    trend = "week" if ctx.field("trend") == "week" else "day"
    default_days = 90 if trend == "week" else 30
    since_text = (
        ctx.field("since") or (datetime.now(UTC) - timedelta(days=default_days)).date().isoformat()
    )
    until_text = ctx.field("until")
    label = ctx.field("label")
    values: dict[str, Any] = {"tab": "usage", "trend": trend, "since": since_text,
                              "until": until_text, "label": label}  # fmt: skip
    budgets: list[pb.Budget] = []
    if ctx.access.may("budgets"):
        budgets = await ctx.client.budgets(ctx.ws)
    # Label keys the budgets name: the ones worth offering in the label field.
    label_keys = sorted({b.scope_key for b in budgets if b.scope_key != ACTOR_KEY})
    values |= {"budgets": budgets, "label_keys": label_keys}
    try:
        since = parse_time(since_text, end=False)
        until = parse_time(until_text, end=True)
    except ValueError as e:
        return ctx.render("usage.html", 400, error=str(e), **values)
    by_label = None
    if label:
        try:
            by_label = await ctx.client.usage(
                ctx.ws, "label", label_key=label, since=since, until=until
            )
        except InvalidArgument as e:
            detail = e.violations[0].description if e.violations else e.message
            return ctx.render("usage.html", 400, error=f"Label {label!r}: {detail}.", **values)
    by_actor = await ctx.client.usage(ctx.ws, "actor", since=since, until=until)
    by_op = await ctx.client.usage(ctx.ws, "operation", since=since, until=until)
    series = await ctx.client.usage(ctx.ws, trend, since=since, until=until)
    chart = charts.bars([(day(r.period_start), r.credits) for r in series.rows])
    return ctx.render(
        "usage.html", error="", by_actor=by_actor, by_op=by_op, by_label=by_label,
        series=series, chart=chart, **values,
    )  # fmt: skip
