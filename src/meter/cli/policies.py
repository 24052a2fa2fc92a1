"""Credit-policy commands (DESIGN.md §10, §13): confirm, void, limits, topup, thresholds."""

from __future__ import annotations

from typing import Annotated

import typer

from meter.cli.remote import Remote, Workspace, client_command, enum_name, out, table, timestamp
from meterpb.v1 import meter_pb2 as pb

GrantId = Annotated[
    str, typer.Argument(help="The pending grant's request id (the payment id).", show_default=False)
]
PERIODS = ("day", "week", "month")


@client_command()
def confirm(remote: Remote, workspace: Workspace, request_id: GrantId) -> None:
    """Make a pending grant spendable (its payment went through).

    Example: meter confirm ws-acme pay_8412
    """
    with remote.session() as meter:
        done = meter.confirm_grant(workspace, request_id)
    if remote.printed_json(done):
        return
    out.print(
        f"confirmed {done.lot.amount} credits of {request_id}; "
        f"available now {done.balance.available}"
    )


@client_command()
def void(
    remote: Remote,
    workspace: Workspace,
    request_id: GrantId,
    reason: Annotated[str, typer.Option("--reason", help="Why (the payment failed...).")] = "",
) -> None:
    """Remove a pending grant (its payment failed); its credits never become spendable.

    Example: meter void ws-acme pay_8412 --reason "card declined"
    """
    with remote.session() as meter:
        done = meter.void_grant(workspace, request_id, reason=reason)
    if remote.printed_json(done):
        return
    out.print(f"voided {done.lot.amount} pending credits of {request_id}")


@client_command()
def limits(
    remote: Remote,
    workspace: Workspace,
    member: Annotated[
        str | None,
        typer.Option("--member", help='The actor id to limit ("" for every member).'),
    ] = None,
    period: Annotated[str, typer.Option("--period", help="day, week or month (UTC).")] = "month",
    limit: Annotated[int | None, typer.Option("--limit", help="Credits per period.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the member's limit.")] = False,
) -> None:
    """Show a workspace's member limits, or set one with --member, --period and --limit.

    Example: meter limits ws-acme --member user_42 --period day --limit 50
    """
    setting = member is not None
    if setting and (limit is None) == (not remove):
        raise typer.BadParameter("with --member give --limit N or --remove, exactly one")
    if not setting and (limit is not None or remove):
        raise typer.BadParameter("--limit and --remove need --member")
    if period.lower() not in PERIODS:
        raise typer.BadParameter(f"--period must be one of {', '.join(PERIODS)}")
    with remote.session() as meter:
        if setting:
            assert member is not None
            meter.set_member_limit(workspace, member, period, None if remove else limit)
        found = meter.member_limits(workspace)
    if remote.printed_json(found):
        return
    if not found:
        return out.print(f"{workspace} has no member limits: every member may spend the balance")
    rows = (
        [
            x.actor_id or "(every member)",
            enum_name(pb.LimitPeriod.Name(x.period), "LIMIT_PERIOD_"),
            str(x.limit),
            str(x.used) if x.actor_id else "",
            str(x.remaining) if x.actor_id else "",
            timestamp(x.resets_at),
        ]
        for x in found
    )
    out.print(
        table(
            f"member limits of {workspace}",
            ("member", "period", "limit", "used", "remaining", "resets"),
            rows,
            right=("limit", "used", "remaining"),
        )
    )


@client_command()
def topup(
    remote: Remote,
    workspace: Workspace,
    threshold: Annotated[
        int | None, typer.Option("--threshold", help="Request a top-up below this.")
    ] = None,
    package: Annotated[str | None, typer.Option("--package", help="The package to buy.")] = None,
    amount: Annotated[int | None, typer.Option("--amount", help="Or credits to buy.")] = None,
    monthly_limit: Annotated[
        int, typer.Option("--monthly-limit", help="At most this many top-ups a month.")
    ] = 3,
    disable: Annotated[bool, typer.Option("--disable", help="Turn the rule off.")] = False,
    failed: Annotated[
        str | None,
        typer.Option("--failed", help="Report that the payment of this request failed."),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="With --failed: why.")] = "",
) -> None:
    """Show a workspace's auto top-up rule, set it with --threshold, or turn it off.

    Example: meter topup ws-acme --threshold 50 --package Basic --monthly-limit 2
    """
    if threshold is not None and (package is None) == (amount is None):
        raise typer.BadParameter("with --threshold give --package NAME or --amount N, exactly one")
    with remote.session() as meter:
        if failed is not None:
            rule = meter.report_topup_failed(workspace, failed, reason)
        elif disable:
            rule = meter.set_auto_topup(workspace, enabled=False)
        elif threshold is not None:
            rule = meter.set_auto_topup(
                workspace,
                threshold=threshold,
                package=package,
                amount=amount,
                monthly_limit=monthly_limit,
            )
        else:
            rule = meter.auto_topup(workspace)
    if remote.printed_json(rule):
        return
    if not rule.threshold:
        return out.print(f"{workspace} has no auto top-up rule")
    buys = rule.package or f"{rule.amount} credits"
    state = "on" if rule.enabled else "off"
    out.print(
        f"auto top-up {state}: below {rule.threshold} buy {buys}, at most {rule.monthly_limit} a "
        f"month ({rule.requested_this_month} this month); failures in a row {rule.failures}"
    )
    if rule.outstanding_request_id:
        out.print(
            f"outstanding: {rule.outstanding_request_id} since {timestamp(rule.requested_at)}"
        )


@client_command()
def thresholds(
    remote: Remote,
    workspace: Workspace,
    low: Annotated[
        int | None, typer.Option("--low", help="The balance is LOW below this many credits.")
    ] = None,
    critical: Annotated[
        int | None,
        typer.Option("--critical", help="The balance is CRITICAL below this many credits."),
    ] = None,
    runway_days: Annotated[
        int | None,
        typer.Option(
            "--runway-days",
            help="balance.runway_low when the credits would run out within this many days "
            "(0: never).",
        ),
    ] = None,
) -> None:
    """Show a workspace's alert thresholds, or change those given (the others stay).

    Example: meter thresholds ws-acme --runway-days 14
    """
    with remote.session() as meter:
        now = meter.balance(workspace).thresholds
        if low is None and critical is None and runway_days is None:
            found = now
        else:
            # SetAlertThresholds sets low and critical together: the ones not given are sent as
            # they were read just now (a change made in between by someone else is overwritten).
            found = meter.set_alert_thresholds(
                workspace,
                low=now.low if low is None else low,
                critical=now.critical if critical is None else critical,
                runway_days=runway_days,
            )
    if remote.printed_json(found):
        return
    runway = (
        f"runway low below {found.runway_days} days" if found.runway_days else "runway alert off"
    )
    out.print(
        f"alert thresholds of {workspace}: low below {found.low}, critical below "
        f"{found.critical}, {runway}"
    )


def register(app: typer.Typer) -> None:
    for command in (confirm, void, limits, topup, thresholds):
        app.command()(command)
