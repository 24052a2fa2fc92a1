"""The events feed's command: meter events [WORKSPACE] [--type T] [--follow] [--json]."""

from __future__ import annotations

import json as jsonlib
import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from meter.cli.remote import (
    Remote,
    as_dict,
    client_command,
    out,
    timestamp,
)
from meterpb.v1 import events_pb2 as epb

# How often `meter events --follow` asks for new events once it has caught up.
POLL_S = 1.0
PAGE = 1000

Types = Annotated[
    list[str] | None,
    typer.Option("--type", help="Only this event type, e.g. balance.low (repeatable)."),
]


@client_command(timeout=30.0)
def events(
    remote: Remote,
    workspace: Annotated[
        str,
        typer.Argument(help="Only this workspace's events; none: every one's.", show_default=False),
    ] = "",
    type_: Types = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")
    ] = False,
) -> None:
    """List the events still kept, oldest first; --follow keeps printing new ones.

    With --follow --json every event is one JSON line.

    Example: meter events ws-acme --type balance.low --type credits.granted --follow
    """
    types = list(type_ or ())
    if follow:
        _follow(remote, workspace, types)
        return
    found: list[epb.Event] = []
    with remote.session() as meter:
        cursor = ""
        while True:
            page = meter.list_events(workspace, types=types, page_size=PAGE, page_token=cursor)
            found.extend(page.events)
            cursor = page.next_page_token
            if not page.events:
                break
    if remote.printed_json(epb.ListEventsResponse(events=found, next_page_token=cursor)):
        return
    whose = f" of {workspace}" if workspace else ""
    t = Table(title=f"events{whose} ({len(found)})", title_justify="left")
    for c in ("time", "type", "workspace", "seq", "event id", "data"):
        if c == "data":
            t.add_column(c, overflow="fold")
        else:
            t.add_column(c, justify="right" if c == "seq" else "left", no_wrap=True)
    for e in found:
        t.add_row(
            timestamp(e.time), e.type, e.workspace_id, str(e.sequence), e.event_id,
            escape(_compact(e.data)),
        )  # fmt: skip
    out.print(t)


def _follow(remote: Remote, workspace: str, types: list[str]) -> None:
    """Print the events there are, then poll from the last position; Ctrl-C ends it (0)."""
    cursor = ""
    try:
        with remote.session() as meter:
            while True:
                page = meter.list_events(workspace, types=types, page_size=PAGE, page_token=cursor)
                for e in page.events:
                    _print_event(e, remote.json)
                cursor = page.next_page_token
                if not page.events:
                    time.sleep(POLL_S)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _print_event(e: epb.Event, json: bool) -> None:
    if json:
        sys.stdout.write(jsonlib.dumps(as_dict(e), ensure_ascii=False) + "\n")
    else:
        line = f"{timestamp(e.time)}  {e.type}  {e.workspace_id or '-'}  #{e.sequence}  "
        out.print(escape(f"{line}{e.event_id}  {_compact(e.data)}"), soft_wrap=True)
    sys.stdout.flush()


def _compact(data: str) -> str:
    try:
        return jsonlib.dumps(jsonlib.loads(data), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return data


def register(root: typer.Typer) -> None:
    root.command()(events)
