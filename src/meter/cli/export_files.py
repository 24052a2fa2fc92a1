"""What `meter export` writes: rows of journal entries and events, partitioned by day, as
Parquet (pyarrow) or CSV files, and the manifest that says what was written.

Layout (Hive-style partitions, which DuckDB, Spark and BigQuery read as a `date` column):

    DIR/journal/date=YYYY-MM-DD/part-<n>.parquet   (or .csv)
    DIR/events/date=YYYY-MM-DD/part-<n>.parquet
    DIR/manifest.json

A day is the UTC date of the row's time. Part numbers continue after the ones a folder has,
so an export into a folder that holds earlier ones never overwrites them. Each file is
written under a temporary name and renamed when complete, and the manifest last, the same
way: a reader never sees half a file, and a manifest never names a file that was not written.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb

FORMATS = ("parquet", "csv")
TABLES = ("journal", "events")
# A day's rows are written in files of at most this many rows (and so held in memory).
ROWS_PER_FILE = 100_000
MANIFEST = "manifest.json"
_PART = re.compile(r"^part-(\d+)\.")

# Column names and types, the same in both formats: (name, Arrow type name).
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "journal": [
        ("workspace_id", "string"),
        ("entry_id", "int64"),
        ("kind", "string"),
        ("amount", "int64"),
        ("balance_after", "int64"),
        ("operation", "string"),
        ("actor_id", "string"),
        ("request_id", "string"),
        ("labels", "string"),  # a JSON object
        ("create_time", "timestamp"),
        ("shortfall", "int64"),
        ("late", "bool"),
        ("reason", "string"),
        ("package", "string"),
        ("category", "string"),
    ],
    "events": [
        ("event_id", "string"),
        ("type", "string"),
        ("workspace_id", "string"),
        ("sequence", "int64"),
        ("time", "timestamp"),
        ("data", "string"),  # a JSON object
    ],
}


def utc(t: Any) -> datetime:
    """A Timestamp message as an aware UTC datetime."""
    return datetime.fromtimestamp(t.seconds, UTC).replace(microsecond=t.nanos // 1000)


def _enum(name: str, prefix: str) -> str:
    return "" if name.endswith("_UNSPECIFIED") else name.removeprefix(prefix).lower()


def journal_row(e: pb.JournalEntry) -> dict[str, Any]:
    return {
        "workspace_id": e.workspace_id,
        "entry_id": int(e.entry_id),
        "kind": _enum(pb.EntryKind.Name(e.kind), "ENTRY_KIND_"),
        "amount": e.amount,
        "balance_after": e.balance_after,
        "operation": e.operation,
        "actor_id": e.actor_id,
        "request_id": e.request_id,
        "labels": json.dumps(dict(sorted(e.labels.items())), ensure_ascii=False),
        "create_time": utc(e.create_time),
        "shortfall": e.shortfall,
        "late": e.late,
        "reason": e.reason,
        "package": e.package,
        "category": _enum(pb.CreditCategory.Name(e.category), "CREDIT_CATEGORY_"),
    }


def event_row(e: epb.Event) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "type": e.type,
        "workspace_id": e.workspace_id,
        "sequence": e.sequence,
        "time": utc(e.time),
        "data": e.data,
    }


def iso(t: datetime | None) -> str | None:
    """Microseconds always, so that every value of a column has one shape (CSV readers guess
    a column's type from its values)."""
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


@dataclass(frozen=True, slots=True)
class Written:
    path: str  # relative to the export's folder
    table: str
    date: str
    rows: int


class PartitionedWriter:
    """Rows in, files out: a file per table and day (more for days past ROWS_PER_FILE)."""

    def __init__(self, root: Path, fmt: str) -> None:
        assert fmt in FORMATS
        self.root = root
        self.fmt = fmt
        self.written: list[Written] = []
        self._buffers: dict[tuple[str, date], list[dict[str, Any]]] = {}
        self._next_part: dict[Path, int] = {}

    def add(self, table: str, when: datetime, row: dict[str, Any]) -> None:
        key = (table, when.astimezone(UTC).date())
        rows = self._buffers.setdefault(key, [])
        rows.append(row)
        if len(rows) >= ROWS_PER_FILE:
            self._flush(*key)

    def close(self) -> list[Written]:
        """Write what is buffered; every file written, in order."""
        for key in sorted(self._buffers):
            self._flush(*key)
        return self.written

    def _part(self, folder: Path) -> int:
        n = self._next_part.get(folder)
        if n is None:
            used = [int(m.group(1)) for p in folder.iterdir() if (m := _PART.match(p.name))]
            n = max(used, default=-1) + 1
        self._next_part[folder] = n + 1
        return n

    def _flush(self, table: str, day: date) -> None:
        rows = self._buffers.pop((table, day), [])
        if not rows:
            return
        folder = self.root / table / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{self._part(folder)}.{self.fmt}"
        temporary = folder / f".{name}.tmp"
        if self.fmt == "parquet":
            _parquet(temporary, table, rows)
        else:
            _csv(temporary, table, rows)
        os.replace(temporary, folder / name)
        relative = (folder / name).relative_to(self.root).as_posix()
        self.written.append(Written(relative, table, day.isoformat(), len(rows)))


def _parquet(path: Path, table: str, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS[table]])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _csv(path: Path, table: str, rows: list[dict[str, Any]]) -> None:
    names = [name for name, _ in COLUMNS[table]]
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(names)
        for row in rows:
            out.writerow([_cell(row[n]) for n in names])


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso(value)
    return value


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Write manifest.json whole or not at all: a temporary file, synced, then renamed."""
    path = root / MANIFEST
    temporary = root / f".{MANIFEST}.tmp"
    with temporary.open("w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    return path


def files_section(written: Iterable[Written]) -> list[dict[str, Any]]:
    return [asdict(w) for w in written]
