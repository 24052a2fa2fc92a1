"""`meter export` against the real server, its files read back by DuckDB (a consumer nobody
here wrote) and compared with what the API answers."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from meter.cli.export import encode_cursor
from meter.rpc.export import TOKEN_KEY
from meter.rpc.paging import Paging
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb
from tests.conftest import EXPORT_LAG_S
from tests.support import eventually, grant, rid

METER = str(Path(sys.executable).with_name("meter"))
ENV = {"PATH": "/usr/bin:/bin", "COLUMNS": "200"}


async def meter(app: Any, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        METER,
        *args,
        "--target",
        f"127.0.0.1:{app.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def when(t: Any) -> datetime:
    return datetime.fromtimestamp(t.seconds, UTC).replace(microsecond=t.nanos // 1000)


async def work(stub: Any, workspaces: list[str]) -> None:
    """Grants, charges and a refusal: journal entries and events in every workspace."""
    for w in workspaces:
        await grant(stub, w, 120, labels={"team": "growth"})
        await stub.Charge(
            pb.ChargeRequest(workspace_id=w, request_id=rid(), amount=25, actor_id="ana")
        )
        job = rid("job")
        await stub.Reserve(pb.ReserveRequest(workspace_id=w, request_id=job, amount=40))
        await stub.Commit(pb.CommitRequest(workspace_id=w, request_id=job, amount=30))


async def api_journal(stub: Any, workspaces: list[str]) -> dict[tuple[str, int], pb.JournalEntry]:
    found = {}
    for w in workspaces:
        page = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=w))
        found.update({(w, int(e.entry_id)): e for e in page.entries})
    return found


async def api_events(events: Any, workspaces: list[str]) -> dict[str, epb.Event]:
    found = {}
    for w in workspaces:
        page = await events.ListEvents(epb.ListEventsRequest(workspace_id=w, page_size=1000))
        found.update({e.event_id: e for e in page.events})
    return found


async def exportable(stub: Any, entries: dict[tuple[str, int], pb.JournalEntry]) -> None:
    """Wait until the export's horizon has passed every one of these entries."""
    newest = max(when(e.create_time) for e in entries.values())

    async def passed() -> bool:
        far = pb.ExportJournalRequest(page_size=1)
        far.start_time.FromDatetime(datetime(2100, 1, 1))
        return when((await stub.ExportJournal(far)).horizon) > newest

    await eventually(passed, within=10 * EXPORT_LAG_S)


def source(folder: Path, table: str, fmt: str) -> str:
    path = f"{folder}/{table}/*/*.{fmt}"
    if fmt == "parquet":
        return f"read_parquet('{path}', hive_partitioning = true)"
    return f"read_csv('{path}', hive_partitioning = true)"


def rows(sql: str) -> list[tuple[Any, ...]]:
    return duckdb.sql(sql).fetchall()


def ids_in(sql_source: str, id_sql: str, workspaces: list[str]) -> set[Any]:
    quoted = ", ".join(f"'{w}'" for w in workspaces)
    return {
        r[0] for r in rows(f"SELECT {id_sql} FROM {sql_source} WHERE workspace_id IN ({quoted})")
    }


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
async def test_an_export_loads_into_duckdb_and_resuming_adds_exactly_the_new_rows(
    app, stub, events, ws, tmp_path, fmt
):
    workspaces = [f"{ws}-1", f"{ws}-2"]
    await work(stub, workspaces)
    journal = await api_journal(stub, workspaces)
    feed = await api_events(events, workspaces)
    since = min(when(e.create_time) for e in journal.values())
    await exportable(stub, journal)

    first = tmp_path / "first"
    code, out, err = await meter(
        app, "export", "--to", str(first), "--since", since.isoformat(), "--format", fmt, "--json"
    )
    assert 0 == code, err
    manifest = json.loads(out)
    assert manifest == json.loads((first / "manifest.json").read_text())
    j, e = source(first, "journal", fmt), source(first, "events", fmt)

    # The rows are the API's, with their ids, amounts and days.
    key = "workspace_id || '/' || entry_id"
    assert {f"{w}/{n}" for w, n in journal} == ids_in(j, key, workspaces)
    quoted = ", ".join(f"'{w}'" for w in workspaces)
    got = {
        (w, n): (kind, amount, after, labels, str(day))
        for w, n, kind, amount, after, labels, day in rows(
            f"SELECT workspace_id, entry_id, kind, amount, balance_after, labels, date FROM {j}"
            f" WHERE workspace_id IN ({quoted})"
        )
    }
    want = {
        k: (
            pb.EntryKind.Name(v.kind).removeprefix("ENTRY_KIND_").lower(),
            v.amount,
            v.balance_after,
            json.dumps(dict(sorted(v.labels.items()))),
            when(v.create_time).date().isoformat(),
        )
        for k, v in journal.items()
    }
    assert want == got
    assert set(feed) == ids_in(e, "event_id", workspaces)
    assert {k: v.type for k, v in feed.items()} == dict(
        rows(f"SELECT event_id, type FROM {e} WHERE workspace_id IN ({quoted})")
    )
    # Every id once; the manifest's counts, files and time range are what DuckDB reads.
    for table, src, ident in (("journal", j, key), ("events", e, "event_id")):
        total, distinct, first_t, last_t = rows(
            f"SELECT count(*), count(DISTINCT {ident}),"
            f" min({'create_time' if table == 'journal' else 'time'}),"
            f" max({'create_time' if table == 'journal' else 'time'}) FROM {src}"
        )[0]
        assert total == distinct == manifest[table]["rows"]
        assert datetime.fromisoformat(manifest[table]["first_time"]) == first_t.astimezone(UTC)
        assert datetime.fromisoformat(manifest[table]["last_time"]) == last_t.astimezone(UTC)
        listed = [f for f in manifest["files"] if f["table"] == table]
        assert total == sum(f["rows"] for f in listed)
        on_disk = {p.relative_to(first).as_posix() for p in (first / table).glob(f"*/*.{fmt}")}
        assert on_disk == {f["path"] for f in listed}
        per_day = dict(rows(f"SELECT CAST(date AS VARCHAR), count(*) FROM {src} GROUP BY 1"))
        assert per_day == {f["date"]: f["rows"] for f in listed}

    # New rows, then an export from the first one's cursor.
    more = [workspaces[0], f"{ws}-3"]
    await work(stub, more)
    workspaces.append(f"{ws}-3")
    journal_after = await api_journal(stub, workspaces)
    feed_after = await api_events(events, workspaces)
    await exportable(stub, journal_after)
    second = tmp_path / "second"
    code, out, err = await meter(
        app, "export", "--to", str(second), "--cursor", manifest["cursor"], "--format", fmt
    )
    assert 0 == code, err
    assert "resume with --cursor mx1." in out
    j2, e2 = source(second, "journal", fmt), source(second, "events", fmt)
    new_entries = {f"{w}/{n}" for w, n in set(journal_after) - set(journal)}
    new_events = set(feed_after) - set(feed)
    assert new_entries == ids_in(j2, key, workspaces)
    assert new_events == ids_in(e2, "event_id", workspaces)
    # Both exports together, deduplicated by id, are the API's whole list.
    both_j = f"(SELECT DISTINCT * FROM (SELECT * FROM {j} UNION ALL SELECT * FROM {j2}))"
    both_e = f"(SELECT DISTINCT * FROM (SELECT * FROM {e} UNION ALL SELECT * FROM {e2}))"
    assert {f"{w}/{n}" for w, n in journal_after} == ids_in(both_j, key, workspaces)
    assert set(feed_after) == ids_in(both_e, "event_id", workspaces)
    # The second export has only what came after the first: nothing of it was in the first.
    first_ids = {r[0] for r in rows(f"SELECT {key} FROM {j}")}
    assert not first_ids & {r[0] for r in rows(f"SELECT {key} FROM {j2}")}
    first_events = {r[0] for r in rows(f"SELECT event_id FROM {e}")}
    assert not first_events & {r[0] for r in rows(f"SELECT event_id FROM {e2}")}


async def test_an_export_into_the_same_folder_resumes_from_its_manifest(app, stub, ws, tmp_path):
    """Without --since or --cursor the folder's manifest is the cursor; part numbers go on,
    so nothing earlier is overwritten."""
    await work(stub, [ws])
    journal = await api_journal(stub, [ws])
    since = min(when(e.create_time) for e in journal.values())
    await exportable(stub, journal)
    folder = tmp_path / "out"
    code, out, err = await meter(
        app, "export", "--to", str(folder), "--since", since.isoformat(), "--json"
    )
    assert 0 == code, err
    first = json.loads(out)
    await grant(stub, ws, 7)
    journal_after = await api_journal(stub, [ws])
    await exportable(stub, journal_after)
    code, out, err = await meter(app, "export", "--to", str(folder), "--json")
    assert 0 == code, err
    second = json.loads(out)
    assert first["cursor"] == second["resumed_from"]
    src = source(folder, "journal", "parquet")
    assert {f"{ws}/{n}" for _, n in journal_after} == ids_in(
        src, "workspace_id || '/' || entry_id", [ws]
    )
    total, distinct = rows(
        f"SELECT count(*), count(DISTINCT workspace_id || '/' || entry_id) FROM {src}"
    )[0]
    assert total == distinct
    assert second["files"]
    assert not {f["path"] for f in first["files"]} & {f["path"] for f in second["files"]}


def no_manifest(folder: Path) -> bool:
    return not (folder / "manifest.json").exists()


async def test_a_folder_that_cannot_be_written_is_a_usage_error(app, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = await meter(app, "export", "--to", str(blocker / "out"))
    assert (2, "") == (code, out)
    assert 1 == len(err.strip().splitlines())
    assert "cannot write there" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--format", "xml"], "use parquet or csv"),
        (["--cursor", "nonsense"], "not a cursor of meter export"),
        (["--cursor", "mx1.bm90IGpzb24"], "does not decode"),
        (["--cursor", "mx1.e30"], "its parts are missing"),
        (["--since", "yesterday"], "not an ISO date"),
        (["--since", "2026-01-01", "--cursor", "mx1.e30"], "not both"),
    ],
)
async def test_bad_options_are_one_line_and_exit_2_with_no_manifest(app, tmp_path, args, words):
    folder = tmp_path / "out"
    code, out, err = await meter(app, "export", "--to", str(folder), *args)
    assert (2, "") == (code, out)
    assert 1 == len(err.strip().splitlines()), err
    assert words in err
    assert no_manifest(folder)


async def test_a_cursor_from_another_server_is_refused_before_anything_is_written(app, tmp_path):
    other = Paging().token(["j", None, "0123456789ab"], TOKEN_KEY)  # type: ignore[list-item]
    folder = tmp_path / "out"
    code, out, err = await meter(
        app, "export", "--to", str(folder), "--cursor", encode_cursor(other, "")
    )
    assert (2, "") == (code, out)
    assert 1 == len(err.strip().splitlines()), err
    assert "another Meter database" in err
    assert no_manifest(folder)
    assert [] == [p for p in folder.rglob("*") if p.is_file()]
