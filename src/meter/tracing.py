"""OpenTelemetry traces (DESIGN.md §16), configured only by the standard OTEL_* variables.

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set
(and OTEL_SDK_DISABLED is not true, OTEL_TRACES_EXPORTER not none). Everything else is the
SDK's to read: the protocol (OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL, `grpc` by default, as the
Python SDK does, or `http/protobuf`), headers, timeouts, OTEL_SERVICE_NAME (default `meter`)
and OTEL_RESOURCE_ATTRIBUTES, the sampler (OTEL_TRACES_SAMPLER[_ARG]), the batch processor's
OTEL_BSP_* and the span limits.

Without tracing, `configure()` returns None and nothing is built: no interceptor is installed,
the batcher and the ledger's pool get no hook, and the SDK is not even imported. The hot path
then runs exactly the code it ran before tracing existed; "a no-op tracer" would still cost a
call, a context attach and an object per RPC.

With tracing, three hooks:

* `meter.rpc.traces.Traces`, an interceptor: a server span per RPC continuing the caller's
  W3C traceparent (its own module).
* `BatchSpans`, the batcher's hook: each queued command remembers its caller's span (taken
  when it is queued), and each batch transaction is a span of its own, linked to those.
* `traced_connections`, the ledger pool's connection class: the batch's round trips to
  PostgreSQL (meter_load, then the write and commit) as child spans of the batch span.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from meter.config import StartupError

if TYPE_CHECKING:
    import psycopg
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanContext, Tracer

R = TypeVar("R")

PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_SERVICE_NAME = "meter"
SCOPE = "meter"

# Attribute names (OpenTelemetry's semantic conventions where they have one).
BATCH_SIZE = "meter.batch.size"
BATCH_CALLERS = "meter.batch.callers"
SHARD_GROUP = "meter.shard_group"


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def protocol(env: Mapping[str, str] = os.environ) -> str:
    """The OTLP protocol the variables name.

    Raises:
        StartupError: not one of PROTOCOLS.
    """
    value = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "grpc"
    )
    if value not in PROTOCOLS:
        raise StartupError(f"OTEL_EXPORTER_OTLP_PROTOCOL is {value!r}: use grpc or http/protobuf")
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter not in ("", "otlp"):
        raise StartupError(f"OTEL_TRACES_EXPORTER is {exporter!r}: Meter exports otlp (or none)")
    return value


@dataclass
class Tracing:
    """The process's tracer and its provider (flushed and shut down when the server stops)."""

    provider: TracerProvider
    tracer: Tracer
    protocol: str

    def shutdown(self) -> None:
        """Send what is buffered, then stop the exporter."""
        self.provider.force_flush()
        self.provider.shutdown()


def configure(env: Mapping[str, str] = os.environ) -> Tracing | None:
    """The tracer the OTEL_* variables configure, or None (and nothing imported) without them.

    Raises:
        StartupError: an OTLP protocol or exporter that Meter does not speak.
    """
    if not wanted(env):
        return None
    proto = protocol(env)
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter: Any
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        exporter = HttpExporter()
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; only the SDK's placeholder
    # (unknown_service:python) is replaced by Meter's name.
    resource = Resource.create({})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # The sampler comes from OTEL_TRACES_SAMPLER (parent-based always-on by default), the
    # processor's delays and sizes from OTEL_BSP_*: the SDK reads them itself.
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    from meter import __version__

    return Tracing(provider, provider.get_tracer(SCOPE, __version__), proto)


class _Linked:
    """A queued command's callback, with the span of the call that queued it."""

    __slots__ = ("caller", "done")

    def __init__(self, done: Callable[[Any], None], caller: SpanContext) -> None:
        self.done = done
        self.caller = caller

    def __call__(self, result: Any) -> None:
        self.done(result)


class BatchSpans:
    """The batcher's hook (meter.ledger.batcher.BatchTrace): callers' spans and batch spans."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import trace

        self._tracer = tracer
        self._current = trace.get_current_span

    def caller(self, done: Callable[[R], None]) -> Callable[[R], None]:
        """`done`, remembering the span of the call queueing it (none: `done` itself)."""
        context = self._current().get_span_context()
        if not context.is_valid:
            return done
        return _Linked(done, context)

    @contextmanager
    def batch(self, dones: Sequence[Callable[..., None]], group: int) -> Iterator[None]:
        """A span around one batch's transaction, linked to each distinct caller's span (a
        stream's many items link once); the database spans inside are its children."""
        from opentelemetry.context import Context
        from opentelemetry.trace import Link, SpanKind

        links: list[Link] = []
        seen: set[tuple[int, int]] = set()
        for d in dones:
            if type(d) is _Linked:
                key = (d.caller.trace_id, d.caller.span_id)
                if key not in seen:
                    seen.add(key)
                    links.append(Link(d.caller))
        # A root of its own: a batch serves many callers' traces, and links to each of them
        # (at most OTEL_SPAN_LINK_COUNT_LIMIT, 128 by default; BATCH_CALLERS counts all).
        with self._tracer.start_as_current_span(
            "meter.batch",
            context=Context(),
            kind=SpanKind.INTERNAL,
            links=links,
            attributes={BATCH_SIZE: len(dones), BATCH_CALLERS: len(seen), SHARD_GROUP: group},
        ):
            yield


# "BEGIN; SELECT meter_load(...)", "[PREPARE ...; ]EXECUTE meter_write_5(...); COMMIT".
_STATEMENT = re.compile(r"\b(meter_load|meter_write)_?\d*\(")


def statement_name(query: Any) -> str:
    """A short name for a ledger message: its Meter function, or its first keyword."""
    text = query if isinstance(query, str) else str(query)
    found = _STATEMENT.search(text[:4096])
    if found is not None:
        return found.group(1)
    return text.split(None, 1)[0].rstrip(";").upper() if text.strip() else "SQL"


def traced_connections(tracer: Tracer) -> type[psycopg.AsyncConnection[Any]]:
    """A psycopg connection class whose `execute` is a client span, but only inside a
    recording span (a batch's): the sweeper's transactions and the pool's own statements
    make none."""
    import psycopg
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    current = trace.get_current_span

    class TracedConnection(psycopg.AsyncConnection[Any]):
        async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if not current().is_recording():
                return await super().execute(query, *args, **kwargs)
            name = statement_name(query)
            with tracer.start_as_current_span(
                name,
                kind=SpanKind.CLIENT,
                attributes={"db.system": "postgresql", "db.operation.name": name},
            ):
                return await super().execute(query, *args, **kwargs)

    return TracedConnection
