"""What the clients saw: every call they made, its attempts, and its final answer.

A call ends `ok` (an answer), `refused` (a final gRPC status: the server decided), or
`unknown` (every attempt was cut off or timed out: the client cannot tell whether it took
effect). The checker judges the ledger against these records, never against the harness's
intentions.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    kind: str  # reserve, commit, release, charge, grant
    workspace_id: str
    request_id: str
    # The parameters that make a request "the same" (REQUEST_ID_REUSED otherwise).
    params: tuple[Any, ...]
    sent: float = field(default_factory=time.monotonic)
    done: float = 0.0
    outcome: str = "unknown"
    answer: dict[str, Any] = field(default_factory=dict)
    code: str = ""
    reason: str = ""
    attempts: int = 0
    # Status codes of the attempts that were retried.
    transient: list[str] = field(default_factory=list)


@dataclass
class History:
    calls: list[Call] = field(default_factory=list)
    jobs: int = 0

    def add(self, call: Call) -> Call:
        self.calls.append(call)
        return call

    def of(self, workspace_id: str, request_id: str) -> list[Call]:
        return [
            c for c in self.calls if c.workspace_id == workspace_id and c.request_id == request_id
        ]

    def workspaces(self) -> set[str]:
        return {c.workspace_id for c in self.calls}

    def transient_codes(self) -> Counter[str]:
        return Counter(code for c in self.calls for code in c.transient)

    def retries(self) -> int:
        return sum(max(c.attempts - 1, 0) for c in self.calls)
