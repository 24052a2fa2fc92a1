"""`meter export --to DIR [--since TIME | --cursor C] [--format parquet|csv]` (DESIGN.md §16).

Journal entries (ExportJournal) and events (ListEvents) of every workspace, through the API
like every client command (so roles apply: app, billing or admin, unscoped), as files a
warehouse loads (meter.cli.export_files), and manifest.json with what was written and the
cursor to resume from: the two feeds' page tokens in one string. Delivery is at least once:
an export that stops before its manifest leaves files that the next export (from the last
manifest's cursor) writes again; every row carries its ids (journal: workspace_id +
entry_id; events: event_id), by which loaders deduplicate.

Without --since or --cursor, an export into a folder whose manifest.json holds a cursor
resumes from it; into a new folder it starts from the oldest entry and event.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from meter.cli.export_files import (
    FORMATS,
    MANIFEST,
    PartitionedWriter,
    event_row,
    files_section,
    iso,
    journal_row,
    utc,
    write_manifest,
)
from meter.cli.remote import Remote, client_command, err, out, print_json, when
from meter.client import InvalidArgument, MeterClient

USAGE = 2
PAGE = 1000
CURSOR_PREFIX = "mx1."
TO_HELP = "The folder to write into (made if missing)."
SINCE_HELP = "Only rows from this time (ISO; naive is UTC)."
CURSOR_HELP = "Resume where an export ended: its manifest's cursor."


def encode_cursor(journal: str, events: str) -> str:
    raw = json.dumps({"journal": journal, "events": events}, separators=(",", ":"))
    return CURSOR_PREFIX + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, str]:
    """(journal token, events token) of an export cursor.

    Raises:
        ValueError: not a cursor that `meter export` wrote.
    """
    text = text.strip()
    if not text.startswith(CURSOR_PREFIX):
        raise ValueError("not a cursor of meter export (they start with mx1.)")
    body = text[len(CURSOR_PREFIX) :]
    try:
        value = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        raise ValueError("not a cursor of meter export (it does not decode)") from None
    if not (
        isinstance(value, dict)
        and isinstance(value.get("journal"), str)
        and isinstance(value.get("events"), str)
    ):
        raise ValueError("not a cursor of meter export (its parts are missing)")
    return value["journal"], value["events"]


def usage_error(message: str) -> typer.Exit:
    """One line on stderr; the caller raises what this returns (exit 2)."""
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(USAGE)


def _writable(to: Path) -> None:
    try:
        to.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=to, prefix=".meter-export-"):
            pass
    except OSError as e:
        raise usage_error(f"--to {to}: cannot write there ({e.strerror or e})") from None


def _resume_from(to: Path) -> str | None:
    """The cursor of the manifest an earlier export left in `to`, if any."""
    path = to / MANIFEST
    if not path.exists():
        return None
    try:
        cursor = json.loads(path.read_text(encoding="utf-8"))["cursor"]
    except (OSError, ValueError, KeyError, TypeError):
        raise usage_error(
            f"{path} is not a manifest of meter export: give --since or --cursor, or another --to"
        ) from None
    if not isinstance(cursor, str):
        raise usage_error(f"{path} holds no cursor: give --since or --cursor")
    return cursor


class _Range:
    """Rows counted and the first and last time among them."""

    def __init__(self) -> None:
        self.rows = 0
        self.first: datetime | None = None
        self.last: datetime | None = None

    def saw(self, t: datetime) -> None:
        self.rows += 1
        self.first = t if self.first is None or t < self.first else self.first
        self.last = t if self.last is None or t > self.last else self.last

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "first_time": iso(self.first), "last_time": iso(self.last)}


@client_command(timeout=60.0)
def export(
    remote: Remote,
    to: Annotated[Path, typer.Option("--to", help=TO_HELP, show_default=False)],
    since: Annotated[str | None, typer.Option("--since", help=SINCE_HELP)] = None,
    cursor: Annotated[str | None, typer.Option("--cursor", help=CURSOR_HELP)] = None,
    format_: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
) -> None:
    """Write every workspace's journal entries and the events as files partitioned by day,
    and manifest.json with the cursor the next export resumes from.

    Example: meter export --to ./meter-export --since 2026-12-01 && duckdb -c
    "SELECT kind, sum(amount) FROM './meter-export/journal/*/*.parquet' GROUP BY kind"
    """
    if format_ not in FORMATS:
        raise usage_error(f"--format {format_!r}: use parquet or csv")
    if since and cursor:
        raise usage_error("give --since or --cursor, not both")
    if format_ == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise usage_error(
            "--format parquet needs pyarrow: pip install 'meter[export]', or use --format csv"
        )
    try:
        start = when(since)
    except typer.BadParameter as e:
        raise usage_error(f"--since: {e.message}") from None
    _writable(to)
    resumed = cursor if cursor is not None else (None if since else _resume_from(to))
    try:
        tokens = decode_cursor(resumed) if resumed is not None else ("", "")
    except ValueError as e:
        raise usage_error(f"--cursor: {e}") from None

    writer = PartitionedWriter(to, format_)
    with remote.session() as meter:
        journal, horizon, journal_token = _journal(meter, writer, tokens[0], start)
        events, events_token = _events(meter, writer, tokens[1], start)
    written = writer.close()
    next_cursor = encode_cursor(journal_token, events_token)
    manifest = {
        "version": 1,
        "format": format_,
        "exported_at": iso(datetime.now(UTC)),
        "target": remote.target,
        "since": iso(start),
        "resumed_from": resumed,
        "cursor": next_cursor,
        "journal": {**journal.as_dict(), "horizon": iso(horizon)},
        "events": events.as_dict(),
        "files": files_section(written),
    }
    write_manifest(to, manifest)
    if remote.json:
        print_json(manifest)
        return
    out.print(
        f"exported {journal.rows} journal entries and {events.rows} events to {to}"
        f" ({len(written)} files, {format_}); resume with --cursor {next_cursor}",
        soft_wrap=True,
    )


def _refused_cursor(e: InvalidArgument) -> typer.Exit | None:
    for v in e.violations:
        if v.field == "page_token":
            return usage_error(f"--cursor: this server refuses it: {v.description}")
    return None


def _journal(
    meter: MeterClient, writer: PartitionedWriter, token: str, start: datetime | None
) -> tuple[_Range, datetime | None, str]:
    """Every journal entry the feed answers after `token`: (counts, horizon, next token)."""
    seen, horizon = _Range(), None
    while True:
        try:
            page = meter.export_journal(since=start, page_size=PAGE, page_token=token)
        except InvalidArgument as e:
            refused = _refused_cursor(e)
            if refused is None:
                raise
            raise refused from None
        for entry in page.entries:
            row = journal_row(entry)
            writer.add("journal", row["create_time"], row)
            seen.saw(row["create_time"])
        token, horizon = page.next_page_token, utc(page.horizon)
        if len(page.entries) < PAGE:
            return seen, horizon, token


def _events(
    meter: MeterClient, writer: PartitionedWriter, token: str, start: datetime | None
) -> tuple[_Range, str]:
    """Every event the feed has after `token` (from `start` on): (counts, next token)."""
    seen = _Range()
    while True:
        try:
            page = meter.list_events("", page_size=PAGE, page_token=token)
        except InvalidArgument as e:
            refused = _refused_cursor(e)
            if refused is None:
                raise
            raise refused from None
        for event in page.events:
            row = event_row(event)
            if start is not None and row["time"] < start:
                continue
            writer.add("events", row["time"], row)
            seen.saw(row["time"])
        token = page.next_page_token
        if not page.events:
            return seen, token


def register(root: typer.Typer) -> None:
    root.command()(export)
