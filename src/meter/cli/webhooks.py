"""Webhook endpoint commands: meter webhooks add|list|disable|enable|delete|rotate|
deliveries|replay|test."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from meter.cli.events import PAGE
from meter.cli.remote import REFUSED, Remote, client_command, enum_name, out, table, timestamp, when
from meterpb.v1 import events_pb2 as epb

app = typer.Typer(
    help="Webhook endpoints: add, list, disable, enable, delete, rotate, deliveries, replay, "
    "test.\n\nExample: meter webhooks add https://hooks.example.com/meter --type balance.low",
    no_args_is_help=True,
)

Endpoint = Annotated[str, typer.Argument(help="The endpoint id (ep_...).", show_default=False)]


def _endpoints_table(title: str, endpoints: Iterable[epb.WebhookEndpoint]) -> Table:
    rows = (
        [
            e.endpoint_id,
            escape(e.url),
            "yes" if e.enabled else "no",
            ", ".join(e.event_types) or "all",
            escape(", ".join(e.workspace_ids)) or "all",
            escape(e.description),
            escape(_status(e)),
        ]
        for e in endpoints
    )
    return table(
        title,
        ("endpoint", "url", "enabled", "types", "workspaces", "description", "status"),
        rows,
        no_wrap=("endpoint", "enabled"),
    )


def _status(e: epb.WebhookEndpoint) -> str:
    notes = []
    if not e.enabled and e.disabled_reason:
        notes.append(f"disabled: {e.disabled_reason}")
    if e.HasField("failing_since"):
        notes.append(f"failing since {timestamp(e.failing_since)}")
    if e.HasField("previous_secret_expire_time"):
        notes.append(f"previous secret signs until {timestamp(e.previous_secret_expire_time)}")
    return "; ".join(notes) or "ok"


def _print_secret(endpoint_id: str, secret: str) -> None:
    out.print(f"signing secret: {secret}", soft_wrap=True, markup=False)
    out.print(
        "Save it now: it will not be shown again "
        f"(meter webhooks rotate {endpoint_id} makes a new one).",
        soft_wrap=True,
        markup=False,
    )


@app.command()
@client_command()
def add(
    remote: Remote,
    url: Annotated[
        str, typer.Argument(help="The http(s) URL to POST events to.", show_default=False)
    ],
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only this event type (repeatable); none: every type."),
    ] = None,
    workspace: Annotated[
        list[str] | None,
        typer.Option("--workspace", help="Only this workspace (repeatable); none: every one."),
    ] = None,
    description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
) -> None:
    """Add a webhook endpoint and print its signing secret, once.

    Example: meter webhooks add https://hooks.example.com/meter --type balance.low
    """
    with remote.session() as meter:
        done = meter.create_webhook_endpoint(
            url,
            event_types=type_ or (),
            workspace_ids=workspace or (),
            description=description,
        )
    if remote.printed_json(done):
        return
    out.print(_endpoints_table("webhook endpoint added", [done.endpoint]))
    _print_secret(done.endpoint.endpoint_id, done.secret)


@app.command("list")
@client_command()
def list_(remote: Remote) -> None:
    """List the webhook endpoints (never their secrets).

    Example: meter webhooks list --json
    """
    with remote.session() as meter:
        found = meter.list_webhook_endpoints()
    if remote.printed_json(epb.ListWebhookEndpointsResponse(endpoints=found)):
        return
    out.print(_endpoints_table(f"webhook endpoints ({len(found)})", found))


def _set_enabled(remote: Remote, endpoint: str, enabled: bool) -> None:
    with remote.session() as meter:
        e = meter.update_webhook_endpoint(endpoint, enabled=enabled)
    if remote.printed_json(e):
        return
    out.print(f"{'enabled' if enabled else 'disabled'} {e.endpoint_id} ({escape(e.url)})")


@app.command()
@client_command()
def disable(remote: Remote, endpoint: Endpoint) -> None:
    """Stop delivering to an endpoint (after enable, replay catches it up).

    Example: meter webhooks disable ep_3f9c2a
    """
    _set_enabled(remote, endpoint, False)


@app.command()
@client_command()
def enable(remote: Remote, endpoint: Endpoint) -> None:
    """Deliver to an endpoint again (also one that Meter disabled after failures).

    Example: meter webhooks enable ep_3f9c2a
    """
    _set_enabled(remote, endpoint, True)


@app.command()
@client_command(json=False)
def delete(remote: Remote, endpoint: Endpoint) -> None:
    """Delete an endpoint with its pending deliveries and its delivery log.

    Example: meter webhooks delete ep_3f9c2a
    """
    with remote.session() as meter:
        meter.delete_webhook_endpoint(endpoint)
    out.print(f"deleted {escape(endpoint)}")


@app.command()
@client_command()
def rotate(remote: Remote, endpoint: Endpoint) -> None:
    """Make a new signing secret and print it, once; the old one signs for 24 hours more.

    Example: meter webhooks rotate ep_3f9c2a
    """
    with remote.session() as meter:
        done = meter.rotate_webhook_secret(endpoint)
    if remote.printed_json(done):
        return
    e = done.endpoint
    until = timestamp(e.previous_secret_expire_time)
    out.print(
        f"rotated the secret of {e.endpoint_id}"
        + (f"; the previous one also signs until {until} UTC" if until else "")
    )
    _print_secret(e.endpoint_id, done.secret)


@app.command()
@client_command(timeout=30.0)
def deliveries(
    remote: Remote,
    endpoint: Endpoint,
    limit: Annotated[int, typer.Option("--limit", help="At most this many attempts.", min=1)] = 50,
) -> None:
    """List an endpoint's delivery attempts, newest first.

    Example: meter webhooks deliveries ep_3f9c2a --limit 20
    """
    found: list[epb.DeliveryAttempt] = []
    cursor = ""
    with remote.session() as meter:
        while len(found) < limit:
            page = meter.list_deliveries(
                endpoint, page_size=min(limit - len(found), PAGE), page_token=cursor
            )
            found.extend(page.attempts)
            cursor = page.next_page_token
            if not cursor:
                break
    found = found[:limit]
    if remote.printed_json(epb.ListDeliveriesResponse(attempts=found)):
        return
    out.print(
        table(
            f"deliveries to {escape(endpoint)} ({len(found)})",
            ("time", "event id", "type", "try", "state", "http", "ms", "error", "next try"),
            map(_attempt_row, found),
            right=("try", "http", "ms"),
        )
    )


def _attempt_row(a: epb.DeliveryAttempt) -> list[str]:
    state = enum_name(epb.DeliveryState.Name(a.state), "DELIVERY_STATE_")
    return [
        timestamp(a.attempt_time),
        a.event_id,
        a.event_type,
        str(a.attempt),
        state + (" (replay)" if a.replay else ""),
        str(a.http_status or "-"),
        str(a.latency.ToMilliseconds()),
        escape(a.error),
        timestamp(a.next_attempt_time),
    ]


@app.command()
@client_command(timeout=30.0)
def replay(
    remote: Remote,
    endpoint: Endpoint,
    since: Annotated[
        str | None,
        typer.Option("--since", help="The endpoint's events from this time (ISO, UTC)."),
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option("--event", help="This event, whatever the filters (repeatable)."),
    ] = None,
) -> None:
    """Deliver events again to an endpoint, with their original ids (--since or --event).

    Example: meter webhooks replay ep_3f9c2a --since 2025-06-01T12:00
    """
    if (since is None) == (not event):
        raise typer.BadParameter("give --since TIME or --event ID (repeatable), exactly one")
    start = when(since)
    with remote.session() as meter:
        queued = meter.replay_events(endpoint, since=start, event_ids=event or ())
    if remote.printed_json(epb.ReplayEventsResponse(queued=queued)):
        return
    out.print(f"queued {queued} deliveries to {escape(endpoint)}")


@app.command("test")
@client_command(timeout=30.0)
def send_test(remote: Remote, endpoint: Endpoint) -> None:
    """Deliver a webhook.test event to an endpoint now; exit 1 when it was not delivered.

    Example: meter webhooks test ep_3f9c2a
    """
    with remote.session() as meter:
        a = meter.send_test_event(endpoint)
    delivered = a.state == epb.DELIVERY_STATE_DELIVERED
    if not remote.printed_json(epb.SendTestEventResponse(attempt=a)):
        if delivered:
            out.print(
                f"delivered {a.event_id} to {escape(endpoint)}: HTTP {a.http_status} "
                f"in {a.latency.ToMilliseconds()} ms"
            )
        else:
            answer = f"HTTP {a.http_status}" if a.http_status else "no answer"
            out.print(
                f"[red]not delivered[/] to {escape(endpoint)} ({answer}): {escape(a.error)}",
                soft_wrap=True,
            )
    if not delivered:
        raise typer.Exit(REFUSED)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="webhooks")
