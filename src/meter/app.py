"""The composition root: settings → database → services → gRPC server, and its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
import structlog

from meter import security, tracing
from meter.catalog.service import CatalogService
from meter.config import Settings, StartupError
from meter.events.dispatcher import Dispatcher
from meter.ledger.batcher import Batcher
from meter.ledger.clock import Clock
from meter.ledger.commands import Command, SweepCmd
from meter.ledger.notify import Notices
from meter.ledger.policy_service import PolicyService
from meter.ledger.service import LedgerService
from meter.ledger.sweeper import Sweeper
from meter.ledger.watch import BalanceWatch
from meter.metrics import Metrics
from meter.rpc import server as rpc_server
from meter.rpc.catalog import CatalogServicer
from meter.rpc.events import EventsServicer
from meter.rpc.meter import MeterServicer
from meter.rpc.paging import Paging
from meter.storage import db
from meter.storage.announcer import Announcer
from meter.storage.audit import AuditQueries
from meter.storage.catalog_repo import CatalogRepo
from meter.storage.deliveries_repo import DeliveriesRepo
from meter.storage.delivery_log_repo import DeliveryLogRepo
from meter.storage.events_repo import EventsRepo
from meter.storage.export import JournalExport
from meter.storage.ledger_repo import LedgerRepo, Result
from meter.storage.listener import Listener
from meter.storage.nodes import LedgerNodes
from meter.storage.policies_repo import PoliciesRepo
from meter.storage.queries import LedgerQueries
from meter.storage.stats import holds_held
from meter.storage.sweeps import SweepQueries
from meter.storage.webhooks_repo import WebhooksRepo

log = structlog.get_logger("meter")

# Watchers' balance queries in flight at most: each answers every watcher that asked for a
# balance while the others ran (meter.ledger.gather), so a burst waits its turn, never
# inside the pool. Their pool has a connection more, for the alerts watchers fetch.
WATCH_QUERIES = 4
WATCH_POOL_SIZE = WATCH_QUERIES + 1
# Unary reads (balances, holds, history, usage, audits) have a pool of their own: a burst
# of them queues there, never for the connections that auth, the catalog and the sweeper
# use (the ledger has its own pool anyway).
READ_POOL_SIZE = 4
# A read waits in its pool's queue as long as its caller's deadline allows (rpc.handlers);
# with no deadline, this long. A burst is queued, not refused: UNAVAILABLE is for a
# database that cannot be reached, and a pool whose queue is this long behind.
READ_QUEUE_S = 30.0
# The batcher never uses more connections than the ledger pool has, so a wait for one only
# happens while the pool reconnects after a database outage: give up soon, so calls end
# UNAVAILABLE (retry elsewhere, or later) well within their deadline, not DEADLINE_EXCEEDED.
LEDGER_POOL_WAIT_S = 1.0
# Connections for the webhook dispatcher and the Events calls: deliveries never wait for the
# ledger's connections, nor the ledger for theirs.
EVENTS_POOL_SIZE = 4
# How often the holds-held gauges are read from the database (only when metrics are served).
HOLDS_SAMPLE_S = 5.0


def database_url(settings: Settings) -> str:
    """The configured database, or the embedded one started in the data directory."""
    if settings.database_url:
        return db.normalize_url(settings.database_url)
    return db.start_embedded(settings.data_dir)


def _workspace_of(cmd: Command) -> str:
    return cmd.workspace_id


@dataclass
class App:
    """A running Meter: its server, its background tasks, and how to stop them."""

    settings: Settings
    url: str
    server: grpc.aio.Server = field(init=False)
    port: int = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        s = self.settings
        # Traces only when the OTEL_* variables ask for them; otherwise None, and no hook
        # below gets anything to call (meter.tracing).
        self.tracing = tracing.configure()
        await asyncio.to_thread(db.migrate, self.url)
        self.engine = db.async_engine(self.url, pool_size=s.pool_size)
        try:
            guard = await security.guard(s, self.engine)
        except StartupError:
            await self.engine.dispose()
            raise
        if s.require_sync_standby and not await db.check_sync_standby_visible(self.engine):
            await self.engine.dispose()
            raise StartupError(
                "--require-sync-standby reads pg_stat_replication, which this database role"
                " cannot see: GRANT pg_monitor (or pg_read_all_stats) to it"
            )
        # The nodes that hold shard groups (the one database, on plain PostgreSQL), a pool
        # each: a connection for each batch worker, the express worker and the sweeper.
        self.nodes = LedgerNodes(
            self.url,
            s.batch_workers + 2,
            LEDGER_POOL_WAIT_S,
            require_sync_standby=s.require_sync_standby,
            connection_class=tracing.traced_connections(self.tracing.tracer)
            if self.tracing
            else psycopg.AsyncConnection,
        )
        await self.nodes.open()
        self.announcer = Announcer(db.libpq_url(self.url))
        self.announcer.start()
        self.metrics = Metrics()
        self.events_engine = db.async_engine(self.url, pool_size=EVENTS_POOL_SIZE)
        shards = self.nodes
        events = EventsRepo(self.events_engine, shards)
        webhooks = WebhooksRepo(self.events_engine, shards)
        self.dispatcher = Dispatcher(
            DeliveriesRepo(self.events_engine, shards),
            webhooks,
            events,
            schedule_s=s.webhook_retry_schedule_s,
            disable_after_s=s.webhook_disable_after_s,
            retention_s=s.event_retention_s,
            timeout_s=s.webhook_timeout_s,
            observe=self.metrics.observe_delivery,
            observe_backlog=self.metrics.observe_backlog if s.metrics_listen else None,
        )

        def committed(
            workspaces: Iterable[str], alerts: Iterable[tuple[int, str]], events: int
        ) -> None:
            fired = list(alerts)
            self.metrics.observe_alerts(len(fired))
            self.announcer.committed(workspaces, fired, events)
            if events:
                self.metrics.observe_events(events)
                self.dispatcher.wake()

        # The ledger's time; tests shift it (meter.ledger.clock).
        self.clock = Clock()
        repo = LedgerRepo(
            self.nodes, committed, self.clock, require_sync_standby=s.require_sync_standby
        )
        self.reads_engine = db.async_engine(
            self.url, pool_size=READ_POOL_SIZE, pool_timeout=READ_QUEUE_S
        )
        self.queries = LedgerQueries(self.reads_engine, self.clock)
        self.catalog = CatalogService(CatalogRepo(self.engine, shards))
        await self.catalog.start()

        async def apply(cmds: Sequence[Command]) -> list[Result]:
            return await repo.apply(
                cmds, self.catalog.actual_cost, prepare=self.catalog.ensure_versions
            )

        nodes = self.nodes

        def shard_of(cmd: Command) -> int:
            return nodes.group(cmd.workspace_id).shard_id

        self.batcher: Batcher[Command, Result] = Batcher(
            apply,
            # On Citus, as many for each node: each node runs its own groups' batches.
            workers=s.batch_workers * len(nodes.map.nodes()),
            max_batch=s.max_batch,
            on_batch=self.metrics.observe_batch,
            key=_workspace_of,
            group=shard_of,
            trace=tracing.BatchSpans(self.tracing.tracer) if self.tracing else None,
        )
        self.batcher.start()
        # Change notices from every replica's commits: they wake watchers and waiting Reserves.
        self.notices = Notices()
        self.listener = Listener(db.libpq_url(self.url), self.notices, self.dispatcher.wake)
        await self.listener.start()
        self.ledger = LedgerService(self.batcher, self.catalog, funds=self.notices)
        policies = PolicyService(self.ledger, PoliciesRepo(self.engine, self.clock), self.catalog)
        # Watchers read through their own small pool: however many there are, they never
        # take a connection the writers need.
        self.watch_engine = db.async_engine(
            self.url, pool_size=WATCH_POOL_SIZE, pool_timeout=READ_QUEUE_S
        )
        self.watch = watch = BalanceWatch(
            self.notices, LedgerQueries(self.watch_engine, self.clock), WATCH_QUERIES
        )

        async def sweep(cmds: Sequence[SweepCmd]) -> list[Result]:
            return await repo.apply(
                cmds,
                self.catalog.actual_cost,
                skip_locked=True,
                prepare=self.catalog.ensure_versions,
            )

        self.sweeper = Sweeper(SweepQueries(self.engine, self.clock).due, sweep, s.sweep_interval_s)
        paging = Paging()
        self.server, self.health = rpc_server.build(
            MeterServicer(
                self.ledger,
                self.queries,
                AuditQueries(self.reads_engine),
                paging,
                policies,
                watch,
                export=JournalExport(self.reads_engine, self.clock),
                export_lag_s=s.export_lag_s,
            ),
            CatalogServicer(self.catalog, self.queries),
            EventsServicer(
                events,
                webhooks,
                DeliveryLogRepo(self.events_engine, shards),
                self.dispatcher,
                paging,
            ),
            guard=guard,
            observe=self.metrics.observe_call,
            traces=self._traces(),
            reuse_port=s.reuse_port,
        )
        self.port = security.bind(self.server, s)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {s.listen}")
        await self.server.start()
        await rpc_server.set_serving(self.health, True)
        self._tasks = [
            asyncio.create_task(self.sweeper.run(), name="sweeper"),
            asyncio.create_task(self._refresh_catalog(), name="catalog-refresh"),
            asyncio.create_task(watch.resync(s.watch_resync_s), name="watch-resync"),
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
        ]
        self.metrics_port = 0
        if s.metrics_listen:
            self._serve_metrics(s.metrics_listen)
        log.info(
            "server.started", listen=s.listen, port=self.port, catalog=self.catalog.current.version
        )

    def _traces(self) -> Any:
        """The interceptor that opens a span per call, when tracing is on."""
        if self.tracing is None:
            return None
        from meter.rpc.traces import Traces

        log.info("tracing.started", protocol=self.tracing.protocol)
        return Traces(self.tracing.tracer)

    def _serve_metrics(self, listen: str) -> None:
        m, pools = self.metrics, self.nodes.pools

        def in_use() -> int:
            return sum(
                p.get_stats()["pool_size"] - p.get_stats()["pool_available"] for p in pools()
            )

        m.watch_pool("ledger", in_use, lambda: sum(p.get_stats()["pool_size"] for p in pools()))
        engines = (
            ("queries", self.engine),
            ("reads", self.reads_engine),
            ("watch", self.watch_engine),
            ("events", self.events_engine),
        )
        for name, engine in engines:
            pool: Any = engine.pool
            m.watch_pool(name, pool.checkedout, pool.size)
        m.watch_expirations(
            lambda: self.sweeper.holds_expired, lambda: self.sweeper.credits_expired
        )
        self.metrics_port = m.serve(listen)
        self._tasks.append(asyncio.create_task(self._sample_holds(), name="holds-sample"))
        log.info("metrics.started", listen=listen, port=self.metrics_port)

    async def _sample_holds(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.metrics.observe_holds(*await holds_held(self.engine))
            await asyncio.sleep(HOLDS_SAMPLE_S)

    async def _refresh_catalog(self) -> None:
        while True:
            await asyncio.sleep(self.settings.catalog_refresh_s)
            with contextlib.suppress(Exception):
                await self.catalog.refresh()

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING first, refuse new calls, finish in-flight ones, then close."""
        await rpc_server.set_serving(self.health, False)
        # Watch streams never finish on their own: end them (UNAVAILABLE, watch again
        # elsewhere) so that they do not hold the drain for its whole grace period.
        self.notices.close()
        await self.server.stop(self.settings.grace_s if grace is None else grace)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.listener.stop()
        await self.batcher.stop()
        await self.announcer.stop()
        await self.nodes.close()
        await self.engine.dispose()
        await self.reads_engine.dispose()
        await self.watch_engine.dispose()
        await self.events_engine.dispose()
        self.metrics.stop()
        if self.tracing is not None:
            # The last spans are sent before the process goes (within OTEL_BSP_EXPORT_TIMEOUT).
            await asyncio.to_thread(self.tracing.shutdown)
        log.info("server.stopped")


# Python's cycle collector, at its defaults (700, 10, 10), runs a young collection every 700
# allocations and a full one every 70,000, and a full one walks every live object: with
# 10,000 watch streams open that is a pause of a tenth of a second or more, and collections
# took 5 s of a 30 s run (`python -m bench.edges --only watchers`). Meter's objects are
# freed by reference counting; the few cycles (tracebacks, finished calls) wait a little
# longer.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Once the server has started: leave what startup built (modules, the catalog, pools)
    out of every later collection, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop."""
    security.announce_unauthenticated(settings)
    url = await asyncio.to_thread(database_url, settings)
    if not settings.database_url:
        log.info("database.embedded", data_dir=str(settings.data_dir))
    app = App(settings, url)
    await app.start()
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("server.draining", grace_s=settings.grace_s)
    await app.stop()
