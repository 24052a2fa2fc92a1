"""W3C trace context on every call, when the caller traces (DESIGN.md §16).

When `opentelemetry` is importable and a span is current, a call's metadata carries its
context (`traceparent`, and `tracestate`/`baggage` when there are any), by the process's
configured propagator (W3C trace context by default), so the server's span for the call is a
child of the caller's. Without the package, or outside a span, the metadata is left as it is.
meter-client does not depend on opentelemetry: an application that traces has it already.
"""

from __future__ import annotations

from typing import Any

Metadata = tuple[tuple[str, str], ...]

_propagate: Any
_trace: Any
try:
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover (the client-only distribution without it)
    _propagate = None
    _trace = None


def with_trace(metadata: Metadata) -> Metadata:
    """`metadata`, plus the current span's trace context if there is one."""
    if _trace is None or not _trace.get_current_span().get_span_context().is_valid:
        return metadata
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    if not carrier:
        return metadata
    return (*metadata, *carrier.items())
