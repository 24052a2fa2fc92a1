"""`meter serve --workers N`: N server processes on one port, sharing the database.

A Python process serves from one core: its event loop and the GIL run one thing at a time.
The supervisor (this module, in the process `meter serve` started) resolves the database
(starting the embedded one if none is given), migrates it once, holds the port, and starts
N workers. Each worker is a whole Meter (its batcher, pools, sweeper, dispatcher and
listener), as replicas on one database already are, and binds the same port with
SO_REUSEPORT: the kernel spreads new connections over the workers. A connection stays with
its worker for its life, so one client's calls share a batcher; many clients spread.

* SIGTERM or SIGINT to the supervisor drains every worker (each as `meter serve` drains
  alone) and exits once they have.
* A worker that dies is started again (after a second); the others serve meanwhile. A
  worker dies with its supervisor, even by SIGKILL (PR_SET_PDEATHSIG).
* With `--metrics-listen`, the supervisor serves /metrics there: every worker's metrics,
  each sample labelled with its `worker` (0..N-1), read from the workers when scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.context import SpawnProcess
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from meter import logs
from meter.config import Settings, StartupError

log = structlog.get_logger("meter.workers")

RESTART_AFTER_S = 1.0
# A worker drains within the grace period; past it (and a margin for closing pools), it is
# killed.
STOP_MARGIN_S = 10.0
SCRAPE_TIMEOUT_S = 2.0
_PR_SET_PDEATHSIG = 1


def default_workers() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def serve(settings: Settings, workers: int) -> None:
    """Run `workers` worker processes until SIGTERM or SIGINT, then drain them."""
    from meter import security
    from meter.app import database_url
    from meter.storage import db

    security.announce_unauthenticated(settings)
    url = database_url(settings)
    db.migrate(url)  # once, before any worker: they find the schema current
    holder, listen = _hold_port(settings.listen)
    settings = replace(settings, listen=listen, reuse_port=True)
    Supervisor(settings, url, workers).run()
    holder.close()


class Supervisor:
    def __init__(self, settings: Settings, url: str, workers: int) -> None:
        self.settings = settings
        self.url = url
        self.count = workers
        self.ctx = multiprocessing.get_context("spawn")
        self.ready: Any = self.ctx.Queue()
        self.procs: dict[int, SpawnProcess] = {}
        self.metrics_ports: dict[int, int] = {}
        self.stopping = False
        self.refused: str | None = None  # why a worker refused to start (StartupError)

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        metrics = self._serve_metrics() if self.settings.metrics_listen else None
        for i in range(self.count):
            self._start(i)
        log.info("workers.started", workers=self.count, listen=self.settings.listen)
        while not self.stopping:
            self._collect_ready()
            sentinels = {p.sentinel: i for i, p in self.procs.items()}
            for s in multiprocessing.connection.wait(list(sentinels), timeout=0.5):
                i = sentinels[s]  # type: ignore[index]
                code = self.procs[i].exitcode
                self._collect_ready()
                if self.stopping:
                    break
                log.error("worker.exited", worker=i, code=code, restart_after_s=RESTART_AFTER_S)
                self.metrics_ports.pop(i, None)
                time.sleep(RESTART_AFTER_S)
                if not self.stopping:
                    self._start(i)
        self._drain()
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        log.info("workers.stopped")
        if self.refused is not None:
            raise StartupError(self.refused)

    def _stop(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            log.info("workers.draining", signal=signal.Signals(signum).name)
        self.stopping = True

    def _start(self, i: int) -> None:
        p = self.ctx.Process(
            target=_worker,
            args=(self.settings, self.url, i, self.ready),
            name=f"meter-worker-{i}",
            daemon=False,
        )
        p.start()
        self.procs[i] = p

    def _collect_ready(self) -> None:
        """Read the workers' reports: started (with their metrics port), or refused to."""
        while True:
            try:
                kind, i, detail = self.ready.get_nowait()
            except queue.Empty:
                return
            if kind == "refused":
                # The settings cannot be served: every worker would refuse alike.
                self.refused, self.stopping = detail, True
            elif detail:
                self.metrics_ports[i] = detail

    def _drain(self) -> None:
        for p in self.procs.values():
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_s + STOP_MARGIN_S
        for p in self.procs.values():
            p.join(max(deadline - time.monotonic(), 0.0))
            if p.is_alive():
                log.error("worker.killed", pid=p.pid, after_s=self.settings.grace_s)
                p.kill()
                p.join(5)

    def _serve_metrics(self) -> Any:
        registry = CollectorRegistry()
        registry.register(_WorkerMetrics(self))
        host, _, port = self.settings.metrics_listen.rpartition(":")
        server, _ = start_http_server(
            int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry
        )
        log.info("metrics.started", listen=self.settings.metrics_listen, port=server.server_port)
        return server


class _WorkerMetrics(Collector):
    """Every worker's metrics, read from its own /metrics when scraped, labelled `worker`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        self.supervisor._collect_ready()
        merged: dict[str, Metric] = {}
        for i, port in sorted(self.supervisor.metrics_ports.items()):
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S
                ) as r:
                    text = r.read().decode()
            except OSError:
                continue  # a worker starting again: its samples are back at the next scrape
            for family in text_string_to_metric_families(text):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for s in family.samples:
                    into.add_sample(
                        s.name, {**s.labels, "worker": str(i)}, s.value, s.timestamp, s.exemplar
                    )
        yield from merged.values()


def _hold_port(listen: str) -> tuple[socket.socket, str]:
    """Bind the port with SO_REUSEPORT (not listening: it takes no connections) for as long
    as the workers run: port 0 becomes one free port they all share, and a port another
    program holds fails here, before any worker starts."""
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    family, _, _, _, addr = socket.getaddrinfo(
        bare or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise SystemExit(f"meter serve: cannot listen on {listen}: {e.strerror}") from None
    bound = sock.getsockname()[1]
    return sock, f"{host}:{bound}"


def _worker(settings: Settings, url: str, index: int, ready: Any) -> None:
    """A worker process: one Meter on the shared port, until SIGTERM."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the supervisor died before the line above
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor says when to stop
    logs.configure(settings.log_level, settings.log_format)
    structlog.contextvars.bind_contextvars(worker=index)
    if settings.metrics_listen:
        settings = replace(settings, metrics_listen="127.0.0.1:0")
    asyncio.run(_run_worker(settings, url, index, ready))


async def _run_worker(settings: Settings, url: str, index: int, ready: Any) -> None:
    from meter.app import App, tune_gc

    app = App(settings, url)
    try:
        await app.start()
    except StartupError as e:
        ready.put(("refused", index, str(e)))
        return
    tune_gc()
    ready.put(("started", index, app.metrics_port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    log.info("server.draining", grace_s=settings.grace_s)
    await app.stop()
