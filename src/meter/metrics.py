"""Prometheus metrics: calls, latency, batches, pools, holds, expirations, alerts, events and
webhook deliveries.

Each App has its own registry (tests run several Apps in one process, and a process-wide
registry would refuse the second). Values that already exist elsewhere (pool statistics, the
sweeper's counters) are read when scraped instead of copied on every change, so the hot path
pays nothing for them; only calls, batch sizes and alerts are counted as they happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

# Unary calls take milliseconds; waits for funds and watches take up to minutes.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# From an event's commit to its endpoint's 2xx: milliseconds normally, hours when retried.
DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 1800, 3600, 36000)


class _Expirations(Collector):
    """The sweeper's running totals, read at scrape time."""

    def __init__(self, holds: Callable[[], int], credits: Callable[[], int]) -> None:
        self._holds = holds
        self._credits = credits

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "meter_holds_expired", "Holds the sweeper expired.", value=self._holds()
        )
        yield CounterMetricFamily(
            "meter_credits_expired", "Credits of lots the sweeper expired.", value=self._credits()
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter("meter_calls", "Finished gRPC calls.", ["method", "code"], registry=r)
        self.latency = Histogram(
            "meter_call_seconds",
            "gRPC call latency.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "meter_batch_size",
            "Ledger commands per database transaction.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.alerts = Counter(
            "meter_alerts_fired", "Alert events this replica's transactions fired.", registry=r
        )
        self.events = Counter(
            "meter_events_written", "Events this replica's transactions wrote.", registry=r
        )
        self.deliveries = Counter(
            "meter_webhook_deliveries",
            "Webhook delivery attempts this replica made, by outcome: delivered, failed (to be "
            "retried), exhausted (the retry schedule is used up).",
            ["outcome"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "meter_webhook_delivery_seconds",
            "From an event's creation to its delivery (a 2xx answer), retries included.",
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.oldest_undelivered = Gauge(
            "meter_webhook_oldest_undelivered_seconds",
            "Age of the oldest event not yet delivered to an enabled endpoint, per endpoint.",
            ["endpoint_id"],
            registry=r,
        )
        self.pool = Gauge(
            "meter_db_pool_connections",
            "Database connections by pool and state.",
            ["pool", "state"],
            registry=r,
        )
        self.holds_held = Gauge(
            "meter_holds_held", "Holds in state HELD, across all workspaces.", registry=r
        )
        self.credits_held = Gauge(
            "meter_credits_held", "Credits set aside by HELD holds, across all workspaces.",
            registry=r,
        )  # fmt: skip
        self._server: Any = None

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def observe_alerts(self, n: int) -> None:
        if n:
            self.alerts.inc(n)

    def observe_events(self, n: int) -> None:
        self.events.inc(n)

    def observe_delivery(self, outcome: str, seconds: float | None) -> None:
        self.deliveries.labels(outcome).inc()
        if seconds is not None:
            self.delivery_latency.observe(seconds)

    def observe_backlog(self, ages: dict[str, float]) -> None:
        """The oldest undelivered event's age per endpoint; endpoints not named are gone."""
        self.oldest_undelivered.clear()
        for endpoint_id, age in ages.items():
            self.oldest_undelivered.labels(endpoint_id).set(age)

    def observe_holds(self, holds: int, credits: int) -> None:
        self.holds_held.set(holds)
        self.credits_held.set(credits)

    def watch_pool(self, name: str, in_use: Callable[[], float], size: Callable[[], float]) -> None:
        self.pool.labels(name, "in_use").set_function(in_use)
        self.pool.labels(name, "size").set_function(size)

    def watch_expirations(self, holds: Callable[[], int], credits: Callable[[], int]) -> None:
        self.registry.register(_Expirations(holds, credits))

    def serve(self, listen: str) -> int:
        """Serve /metrics on HOST:PORT (port 0: any free one); returns the port."""
        host, _, port = listen.rpartition(":")
        self._server, _ = start_http_server(
            int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry
        )
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
