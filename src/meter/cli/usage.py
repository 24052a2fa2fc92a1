"""`meter usage`: credits used, grouped by operation, actor, day or week."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from meter.cli import charts
from meter.cli.remote import (
    Remote,
    Since,
    Until,
    Workspace,
    client_command,
    enum_name,
    out,
    when,
)
from meterpb.v1 import meter_pb2 as pb


@client_command(timeout=30.0)
def usage(
    remote: Remote,
    workspace: Workspace,
    by: Annotated[
        str, typer.Option("--by", help="operation, actor, day or week.", show_default=False)
    ],
    since: Since = None,
    until: Until = None,
) -> None:
    """Credits used, grouped by operation, actor (member), day or week; days get a chart.

    Example: meter usage ws-acme --by actor --since 2025-06-02
    """
    if by not in ("operation", "actor", "day", "week"):
        raise typer.BadParameter("--by is operation, actor, day or week")
    with remote.session() as meter:
        report = meter.usage(workspace, by, since=when(since), until=when(until))
    if remote.printed_json(report):
        return
    print_usage(workspace, by, report)


def print_usage(workspace: str, by: str, report: pb.GetUsageResponse) -> None:
    timed = by in ("day", "week")
    rows = [
        (r.period_start.ToDatetime().strftime("%Y-%m-%d") if timed else r.key or "-", r)
        for r in report.rows
    ]
    members = by == "actor"
    t = Table(title=f"usage of {workspace} by {by}", title_justify="left")
    t.add_column(by)
    t.add_column("credits", justify="right")
    t.add_column("charges", justify="right")
    if members:
        t.add_column("held now", justify="right")
        t.add_column("limits")
    for label, r in rows:
        cells = [label, str(r.credits), str(r.count)]
        if members:
            cells += [str(r.held), _limits(r)]
        t.add_row(*cells)
    total = ["total", str(report.total_credits), str(report.total_count)]
    if members:
        total += [str(sum(r.held for r in report.rows)), ""]
    t.add_row(*total, style="bold")
    out.print(t)
    if timed and rows:
        out.print()
        for line in charts.bars([(label, r.credits) for label, r in rows]):
            out.print(line)


def _limits(r: pb.UsageRow) -> str:
    """A member's limits: "100/day, 10 left; ..."."""
    return "; ".join(
        f"{lm.limit}/{enum_name(pb.LimitPeriod.Name(lm.period), 'LIMIT_PERIOD_')},"
        f" {lm.remaining} left"
        for lm in r.limits
    )
