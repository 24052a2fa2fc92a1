"""Background loops that must end when they are cancelled (the drain waits for them)."""

from __future__ import annotations

import asyncio


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task is being cancelled.

    A loop that catches database errors calls it after its `except`: a cancellation that
    reached a database call can come out of the driver as a database error, and the loop
    would otherwise go on for ever while the drain waits for it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
