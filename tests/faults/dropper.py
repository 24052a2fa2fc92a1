"""A TCP proxy that loses answers: requests go through, then the connection is cut just as
the server's response arrives, so the client never learns that its call took effect."""

from __future__ import annotations

import asyncio
import contextlib
import random

from tests.proxy import Proxy

# HTTP/2 control frames (SETTINGS acks, PINGs, WINDOW_UPDATEs) are 9-17 bytes; a unary
# response (HEADERS, DATA and trailers) is larger. Cutting only on larger chunks drops answers
# rather than connection housekeeping.
ANSWER_BYTES = 30


class AnswerDropper(Proxy):
    """Forwards every request; drops a share of the server's answers by cutting both sides."""

    def __init__(self, target: tuple[str, int], share: float = 0.0) -> None:
        super().__init__(target)
        self.share = share
        self.dropped = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)  # type: ignore[misc]
        except OSError:
            writer.transport.abort()
            return
        self._conns.update((writer, up_w))

        def cut() -> None:
            writer.transport.abort()
            up_w.transport.abort()

        async def requests() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    up_w.write(data)
                    await up_w.drain()
            cut()

        async def answers() -> None:
            first = True
            with contextlib.suppress(ConnectionError, OSError):
                while data := await up_r.read(65536):
                    if not first and len(data) >= ANSWER_BYTES and random.random() < self.share:
                        self.dropped += 1
                        break
                    first = False
                    writer.write(data)
                    await writer.drain()
            cut()

        await asyncio.gather(requests(), answers(), return_exceptions=True)
        self._conns.discard(writer)
        self._conns.discard(up_w)
