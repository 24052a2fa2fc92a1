"""A workspace's ledger in a few lines of pure Python: what every answer and balance must be.

It knows nothing of batches, lots, SQL or retries: holds set credits aside, commits charge the
actual cost (the held amount plus whatever `available` covers of any excess), releases give
a hold back, expiry gives it back too, and a late commit is charged from `available`. A
pending grant adds nothing until its confirmation, whose entry is the grant's. A member with
a limit never has more charged and held than it (DESIGN.md §10). The checker replays the
server's own orders (holds by hold id, the journal by entry id, both dense and
commit-ordered per workspace) through it and compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HELD, COMMITTED, RELEASED, EXPIRED = 1, 2, 3, 4
RESERVE, CHARGE = 1, 2


@dataclass
class Hold:
    request_id: str
    hold_id: int
    kind: int
    amount: int
    state: int = HELD
    charged: int = 0
    shortfall: int = 0
    late: bool = False
    actor: str = ""

    @property
    def released(self) -> int:
        """What a commit's answer reports as given back."""
        if self.kind == CHARGE or self.late:
            return 0
        return max(self.amount - self.charged, 0)


@dataclass
class Commit:
    charged: int
    shortfall: int
    balance_after: int


@dataclass
class Ledger:
    workspace_id: str
    balance: int = 0  # available + held; what the journal sums to
    lifetime_used: int = 0
    lifetime_granted: int = 0
    holds: dict[str, Hold] = field(default_factory=dict)
    entries: int = 0
    limits: dict[str, int] = field(default_factory=dict)  # actor -> credits per period

    @property
    def held(self) -> int:
        return sum(h.amount for h in self.holds.values() if h.state == HELD)

    @property
    def available(self) -> int:
        return self.balance - self.held

    def grant(self, amount: int) -> int:
        """Returns the balance after."""
        self.entries += 1
        self.balance += amount
        self.lifetime_granted += amount
        return self.balance

    def spent(self, actor: str) -> int:
        """What a member holds, and was charged within its holds (the run stays in one
        period). A commit above its hold or after it expired is honoured beyond the limit,
        as it is beyond the balance: the work was done; only reserves are refused."""
        return sum(
            min(h.charged, h.amount) if h.state == COMMITTED else h.amount
            for h in self.holds.values()
            if h.actor == actor and (h.state == HELD or (h.state == COMMITTED and not h.late))
        )

    def over_limits(self) -> list[str]:
        """Members whose charged and held credits exceed their limits."""
        return [
            f"{actor} spent {self.spent(actor)} of a limit of {limit}"
            for actor, limit in sorted(self.limits.items())
            if self.spent(actor) > limit
        ]

    def hold(self, request_id: str, kind: int, amount: int, actor: str = "") -> Hold:
        """Take a hold (a Reserve) or record a Charge's; returns it with its dense id."""
        if request_id in self.holds:
            raise AssertionError(f"{request_id}: a second hold for one request id")
        if kind == RESERVE and amount > self.available:
            raise AssertionError(f"{request_id}: held {amount} with {self.available} available")
        h = Hold(request_id, len(self.holds) + 1, kind, amount, actor=actor)
        self.holds[request_id] = h
        return h

    def commit(self, request_id: str, actual: int, late: bool) -> Commit:
        """Charge a hold's actual cost: the hold, then what `available` covers of the rest."""
        h = self.holds[request_id]
        if h.state in (COMMITTED, RELEASED):
            raise AssertionError(f"{request_id}: committed while {h.state}")
        if h.kind == CHARGE:
            charged = min(actual, self.available + h.amount)
        elif late or h.state == EXPIRED:
            h.state, late = EXPIRED, True
            charged = min(actual, self.available)
        else:
            charged = min(actual, h.amount + self.available)
        h.state, h.charged, h.shortfall, h.late = COMMITTED, charged, actual - charged, late
        self.entries += 1
        self.balance -= charged
        self.lifetime_used += charged
        return Commit(charged, actual - charged, self.balance)

    def release(self, request_id: str) -> int:
        """Give a hold back in full; 0 for one that expired (a no-op, not an error)."""
        h = self.holds[request_id]
        if h.state == COMMITTED:
            raise AssertionError(f"{request_id}: released after its commit")
        if h.state == EXPIRED:
            return 0
        h.state = RELEASED
        return h.amount

    def expire(self, request_id: str) -> None:
        h = self.holds[request_id]
        if h.state != HELD:
            raise AssertionError(f"{request_id}: expired while {h.state}")
        h.state = EXPIRED
