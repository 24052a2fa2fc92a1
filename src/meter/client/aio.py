"""AsyncMeterClient: the asyncio client, the same shape as MeterClient.

Example::

    async with AsyncMeterClient() as meter:            # METER_TARGET, METER_TOKEN
        async with meter.job("ws-1", "content.generate_post", job_id=job.id,
                             usage=usage(complexity="standard")) as j:
            j.actual = await run(job)                  # commit on success, release on error
"""

from __future__ import annotations

from meter.client._async.client import AsyncClientBase
from meter.client._async.holds import AsyncJob
from meter.client.stream import StreamSession
from meter.client.tracecontext import with_trace
from meterpb.v1 import meter_pb2_grpc

__all__ = ["AsyncJob", "AsyncMeterClient"]


class AsyncMeterClient(AsyncClientBase):
    """An asyncio Meter client (grpc.aio); make it inside the event loop that uses it.

    The same methods, arguments, retries and exceptions as `MeterClient`, awaited, and
    `stream_session()` for worker pools.
    """

    @property
    def stub(self) -> meter_pb2_grpc.MeterStub:
        """The raw Meter stub on this client's channel (Stream sessions use it)."""
        return self._meter

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """A call's metadata: credentials, and the current span's trace context if any."""
        return with_trace(self._metadata)

    def stream_session(self, *, max_batch: int = 500) -> StreamSession:
        """A session that batches this client's ledger calls over one Meter.Stream."""
        return StreamSession(self, max_batch=max_batch)
