"""MeterClient: the blocking client for workers, the planner and tools.

Example::

    with MeterClient() as meter:                       # METER_TARGET, METER_TOKEN
        with meter.job("ws-1", "content.generate_post", job_id=job.id,
                       usage=usage(complexity="standard")) as j:
            j.actual = run(job)                        # commit on success, release on error

Its calls are generated from the asyncio ones (_sync/client.py from _async/client.py).
"""

from __future__ import annotations

from meter.client._sync.client import SyncClientBase
from meter.client._sync.holds import Job

__all__ = ["Job", "MeterClient"]


class MeterClient(SyncClientBase):
    """A blocking Meter client; thread-safe; use one per process and `close()` it.

    Every call raises a `meter.client.errors.MeterError` subclass on failure. Unary calls
    are retried on UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED and RESOURCE_EXHAUSTED with the
    same request (so the same request id), per `retry`.

    Args:
        target: HOST:PORT; default METER_TARGET, else 127.0.0.1:50051.
        token: bearer token; default METER_TOKEN.
        tls: TLS (and mutual TLS) settings; None for plaintext.
        retry: the retry policy (deadlines, backoff, budget).
        options: extra gRPC channel options.
    """
