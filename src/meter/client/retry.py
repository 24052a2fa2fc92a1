"""Retries with exponential backoff and full jitter, under a per-call deadline and a budget."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from meter.client.errors import MeterError


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One failed attempt that will be retried (for logs and metrics)."""

    method: str
    attempt: int
    error: MeterError
    delay: float


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, under an overall budget.

    A retryable failure (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED) is
    retried with the *same request*, so the same request id: the server answers a retry of
    a call that did take effect with the first answer and charges nothing again.

    Attributes:
        max_attempts: attempts in all, the first included.
        initial_backoff, max_backoff, multiplier: the backoff before attempt n+1 is drawn
            uniformly from [0, min(max_backoff, initial_backoff * multiplier**(n-1))]; a
            server's RetryInfo delay is a floor under it.
        attempt_timeout: the deadline of the first attempt, in seconds.
        attempt_timeout_multiplier, max_attempt_timeout: later attempts get longer deadlines
            (a first deadline too short for a slow moment should not doom every retry).
        budget: seconds for all attempts and backoffs together; no attempt outlives it.
        on_retry: called before each backoff sleep.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    attempt_timeout: float = 10.0
    attempt_timeout_multiplier: float = 1.0
    max_attempt_timeout: float = 60.0
    budget: float = 60.0
    on_retry: Callable[[RetryEvent], None] | None = None
    jitter: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def timeout(self, attempt: int, remaining: float) -> float:
        """The deadline of attempt number `attempt` (1-based), within the remaining budget."""
        t = self.attempt_timeout * self.attempt_timeout_multiplier ** (attempt - 1)
        return max(min(t, self.max_attempt_timeout, remaining), 0.0)

    def backoff(self, attempt: int, error: MeterError) -> float:
        """Seconds to sleep after failed attempt number `attempt` (1-based)."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        delay = self.jitter(0.0, cap)
        if error.retry_delay is not None:
            delay = max(delay, error.retry_delay)
        return delay

    def should_retry(self, attempt: int, error: MeterError, remaining: float) -> bool:
        return error.retryable and attempt < self.max_attempts and remaining > 0


NO_RETRY = RetryPolicy(max_attempts=1)


class Attempts:
    """The state of one call's attempts: deadlines, the budget left, and whether to retry.

    Shared by the sync and the asyncio clients, which differ only in how they sleep.
    """

    def __init__(
        self, policy: RetryPolicy, method: str, timeout: float | None = None, extra: float = 0.0
    ) -> None:
        """Args:
        policy: the client's retry policy.
        method: the RPC's name, for RetryEvent.
        timeout: a fixed deadline for every attempt instead of the policy's.
        extra: seconds the server may legitimately take on top (Reserve's wait_for_funds),
            added to every deadline and to the budget.
        """
        self.policy = policy
        self.method = method
        self.fixed_timeout = timeout
        self.extra = extra
        self.attempt = 0
        self.start = time.monotonic()
        self.unreachable: MeterError | None = None

    @property
    def wait_for_ready(self) -> bool:
        """Whether this attempt waits for the channel to (re)connect within its deadline.

        The first attempt fails fast when the server cannot be reached; retries wait for
        the channel's reconnection, which gRPC paces with its own backoff, instead of
        spending their attempts on a channel that is known to be down.
        """
        return self.attempt > 1

    def remaining(self) -> float:
        return self.policy.budget + self.extra - (time.monotonic() - self.start)

    def next_timeout(self) -> float:
        """Start an attempt: its deadline in seconds."""
        self.attempt += 1
        left = max(self.remaining(), 0.001)
        if self.fixed_timeout is not None:
            return min(self.fixed_timeout + self.extra, left)
        return max(self.policy.timeout(self.attempt, left - self.extra) + self.extra, 0.001)

    def backoff(self, error: MeterError) -> float:
        """The sleep before the next attempt; raises `error` when there is none to make."""
        left = self.remaining()
        if error.code == grpc.StatusCode.UNAVAILABLE:
            self.unreachable = error
        if not self.policy.should_retry(self.attempt, error, left):
            if self.unreachable is not None and error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                # The retries only waited for a connection that never came back.
                raise self.unreachable
            raise error
        delay = min(self.policy.backoff(self.attempt, error), max(left, 0.0))
        if self.policy.on_retry is not None:
            self.policy.on_retry(RetryEvent(self.method, self.attempt, error, delay))
        return delay
