"""Ledger commands: balance, grant, adjust, history, usage (cli/usage.py), holds, audit."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from meter.cli.remote import (
    REFUSED,
    Remote,
    Since,
    Until,
    Workspace,
    client_command,
    enum_name,
    err,
    out,
    table,
    timestamp,
    when,
)
from meter.cli.usage import usage
from meterpb.v1 import meter_pb2 as pb

RequestId = Annotated[
    str,
    typer.Option(
        "--request-id", help="Idempotency key (the payment id for purchases).", show_default=False
    ),
]


@client_command()
def balance(remote: Remote, workspace: Workspace) -> None:
    """Show a workspace's balance.

    Example: meter balance ws-acme --json
    """
    with remote.session() as meter:
        b = meter.balance(workspace)
    if remote.printed_json(b):
        return
    t = Table(title=f"balance of {workspace}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("available", str(b.available))
    for c in b.by_category:
        t.add_row(
            f"  {enum_name(pb.CreditCategory.Name(c.category), 'CREDIT_CATEGORY_')}",
            str(c.available),
        )
    t.add_row("held", str(b.held))
    if b.pending:
        t.add_row("pending", f"{b.pending} (not spendable until confirmed)")
    t.add_row("total", str(b.total))
    t.add_row("level", enum_name(pb.BalanceLevel.Name(b.level), "BALANCE_LEVEL_"))
    t.add_row("lifetime granted", str(b.lifetime_granted))
    t.add_row("lifetime used", str(b.lifetime_used))
    if b.expiring_soon.credits:
        t.add_row(
            "expiring within 30 days",
            f"{b.expiring_soon.credits} (first {timestamp(b.expiring_soon.earliest)})",
        )
    for name, value in _runway(b.runway):
        t.add_row(name, value)
    if b.HasField("last_transaction"):
        last = b.last_transaction
        kind = enum_name(pb.EntryKind.Name(last.kind), "ENTRY_KIND_")
        t.add_row(
            "last transaction",
            f"{kind} {last.amount:+d} {last.operation} at {timestamp(last.time)}".replace(
                "  ", " "
            ),
        )
    out.print(t)


def _runway(r: pb.Runway) -> list[tuple[str, str]]:
    """The runway's rows: the burn, and how long the credits last at it."""
    rows = [("burn per day", f"{r.burn_per_day:.1f} (7 days), {r.burn_per_day_30d:.1f} (30 days)")]
    if r.HasField("days_left"):
        rows.append(("days left", f"{r.days_left:.1f} (zero at {timestamp(r.zero_at)})"))
    else:
        rows.append(("days left", "no burn yet"))
    if r.HasField("topup_at"):
        rows.append(("auto top-up due", timestamp(r.topup_at)))
    alert = f"below {r.runway_days} days" if r.runway_days else "off"
    rows.append(("runway alert", alert))
    return rows


@client_command()
def grant(
    remote: Remote,
    workspace: Workspace,
    request_id: RequestId,
    package: Annotated[
        str | None, typer.Option("--package", help="Starter, Basic, Popular, Pro or Max.")
    ] = None,
    amount: Annotated[int | None, typer.Option("--amount", help="Explicit credits.")] = None,
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="Expiry date (default: 12 months for packages)."),
    ] = None,
    source: Annotated[str, typer.Option("--source", help="purchase, promotion, manual...")] = "",
    category: Annotated[
        str, typer.Option("--category", help="paid, promotional or manual (default: by source).")
    ] = "",
    priority: Annotated[
        int | None, typer.Option("--priority", help="0-100, lower burns first (default 50).")
    ] = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="Not spendable until `meter confirm`.")
    ] = False,
) -> None:
    """Add credits to a workspace, by package or explicit amount.

    Example: meter grant ws-acme --package Pro --request-id pay_8412
    """
    if (package is None) == (amount is None):
        raise typer.BadParameter("give --package NAME or --amount N, exactly one")
    with remote.session() as meter:
        done = meter.grant(
            workspace,
            request_id,
            package=package,
            amount=amount,
            expires_at=when(expires),
            source=source,
            category=category,
            priority=priority,
            pending=pending,
        )
    if remote.printed_json(done):
        return
    expiry = timestamp(done.lot.expires_at) or "never"
    if not done.HasField("entry"):
        state = enum_name(pb.LotState.Name(done.lot.state), "LOT_STATE_")
        return out.print(
            f"{done.lot.amount} credits for {workspace} are {state} (request {request_id}); "
            f"`meter confirm {workspace} {request_id}` makes them spendable"
        )
    out.print(
        f"granted {done.entry.amount} credits to {workspace} (expires {expiry}); "
        f"available now {done.balance.available}"
    )


@client_command()
def adjust(
    remote: Remote,
    workspace: Workspace,
    amount: Annotated[
        int, typer.Option("--amount", help="Signed credits (negative removes).", show_default=False)
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why.", show_default=False)],
    request_id: RequestId,
) -> None:
    """Correct a workspace's credits (never below zero).

    Example: meter adjust ws-acme --amount -20 --reason "duplicate grant" --request-id adj-17
    """
    with remote.session() as meter:
        done = meter.adjust(workspace, request_id, amount, reason)
    if remote.printed_json(done):
        return
    out.print(f"adjusted {workspace} by {amount:+d}; available now {done.balance.available}")


HISTORY_COLUMNS = (
    "time", "kind", "amount", "balance_after", "operation", "actor_id", "request_id", "reason",
    "category",
)  # fmt: skip


def _history_row(e: pb.JournalEntry) -> list[str]:
    return [
        timestamp(e.create_time),
        enum_name(pb.EntryKind.Name(e.kind), "ENTRY_KIND_"),
        f"{e.amount:+d}",
        str(e.balance_after),
        e.operation,
        e.actor_id,
        e.request_id,
        e.reason or e.package,
        enum_name(pb.CreditCategory.Name(e.category), "CREDIT_CATEGORY_") if e.category else "",
    ]


@client_command(timeout=30.0)
def history(
    remote: Remote,
    workspace: Workspace,
    operation: Annotated[
        list[str] | None, typer.Option("--operation", help="Only this operation (repeatable).")
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", help="grant, charge, expire, adjust, refund (repeatable)."),
    ] = None,
    actor: Annotated[str, typer.Option("--actor", help="Only this actor.")] = "",
    since: Since = None,
    until: Until = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many entries.")] = None,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Write every entry to this CSV file.")
    ] = None,
) -> None:
    """List a workspace's journal, newest first (every page, or --limit).

    Example: meter history ws-acme --kind charge --since 2025-06-01 --csv june.csv
    """
    try:
        kinds = [k.upper() for k in kind or ()]
        for k in kinds:
            pb.EntryKind.Value(f"ENTRY_KIND_{k}")
    except ValueError:
        raise typer.BadParameter("--kind is grant, charge, expire, adjust or refund") from None
    with remote.session() as meter:
        entries = meter.history(
            workspace,
            kinds=kinds,
            operations=operation or (),
            actor=actor,
            since=when(since),
            until=when(until),
        )
        found = list(_limited(entries, limit, progress=csv_file is not None))
    if csv_file is not None:
        with csv_file.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(HISTORY_COLUMNS)
            w.writerows(_history_row(e) for e in found)
        err.print(f"wrote {len(found)} entries to {csv_file}")
    if remote.printed_json(pb.ListTransactionsResponse(entries=found)):
        return
    if csv_file is not None:
        return None
    out.print(
        table(
            f"history of {workspace} ({len(found)} entries)",
            ("time", "kind", "amount", "after", "operation", "actor", "request id", "note"),
            map(_history_row, found),
            right=("amount", "after"),
            no_wrap=("time",),
        )
    )


def _limited(
    entries: Iterator[pb.JournalEntry], limit: int | None, progress: bool
) -> Iterator[pb.JournalEntry]:
    with Progress(
        SpinnerColumn(),
        TextColumn("fetched {task.completed} entries"),
        TimeElapsedColumn(),
        console=err,
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task("history", total=limit)
        for n, e in enumerate(entries, 1):
            yield e
            bar.advance(task)
            if limit is not None and n >= limit:
                return


@client_command(timeout=30.0)
def holds(
    remote: Remote,
    workspace: Workspace,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help="held, committed, released, expired (repeatable)."),
    ] = None,
) -> None:
    """List a workspace's holds (every state, or --state).

    Example: meter holds ws-acme --state held
    """
    try:
        states = [pb.HoldState.Value(f"HOLD_STATE_{s.upper()}") for s in state or ()]
    except ValueError:
        raise typer.BadParameter("--state is held, committed, released or expired") from None
    with remote.session() as meter:
        found = list(meter.holds(workspace, states=states))
    if remote.printed_json(pb.ListHoldsResponse(holds=found)):
        return
    rows = (
        [
            h.request_id,
            enum_name(pb.HoldState.Name(h.state), "HOLD_STATE_"),
            str(h.amount),
            str(h.charged),
            h.operation,
            h.actor_id,
            timestamp(h.expires_at),
        ]
        for h in found
    )
    out.print(
        table(
            f"holds of {workspace} ({len(found)})",
            ("request_id", "state", "amount", "charged", "operation", "actor", "expires_at"),
            rows,
            right=("amount", "charged"),
        )
    )


@client_command(timeout=600.0)
def audit(
    remote: Remote,
    workspace: Annotated[
        str, typer.Argument(help="One workspace; none audits them all.", show_default=False)
    ] = "",
) -> None:
    """Prove balances from the journal, lots and holds; exit 1 on any discrepancy.

    Example: meter audit            (every workspace)
    """
    with (
        remote.session() as meter,
        Progress(
            SpinnerColumn(),
            TextColumn("auditing every workspace"),
            TimeElapsedColumn(),
            console=err,
            disable=bool(workspace),
            transient=True,
        ) as progress,
    ):
        progress.add_task("audit", total=None)
        report = meter.audit(workspace)
    if not remote.printed_json(report):
        _print_audit(report)
    if report.discrepancies:
        raise typer.Exit(REFUSED)


def _print_audit(report: Any) -> None:
    n = len(report.discrepancies)
    out.print(f"{report.workspaces_checked} workspaces checked, {n} discrepancies")
    if not n:
        return
    t = Table()
    for c in ("workspace", "check", "subject", "expected", "actual", "detail"):
        t.add_column(c)
    for d in report.discrepancies:
        t.add_row(d.workspace_id, d.check, d.subject, str(d.expected), str(d.actual), d.detail)
    out.print(t)


def register(app: typer.Typer) -> None:
    for command in (balance, grant, adjust, history, usage, holds, audit):
        app.command()(command)
