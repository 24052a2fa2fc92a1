"""Budgets (DESIGN.md §13): refusing what would take a budget past its limit, counting what
holds and charges spend, and the notices of warn_at marks crossed."""

from __future__ import annotations

from collections.abc import Mapping

from meter import errors
from meter.events import types as events
from meter.ledger.book.state import BookState
from meter.ledger.budgets import Breach
from meter.ledger.model import Hold, Period


class BudgetRules(BookState):
    """Budgets on holds and charges."""

    __slots__ = ()  # the state's slots are BookState's

    def _require_within_budgets(
        self, actor_id: str, labels: Mapping[str, str], amount: int, request_id: str
    ) -> None:
        """Refuse what would take any budget the request falls under past its limit, naming
        the one with the least room: a member limit as MEMBER_LIMIT_REACHED, another budget
        as BUDGET_EXCEEDED. The first refusal of a period writes its event."""
        assert self.budgets is not None
        breach = self.budgets.breach(actor_id, labels, amount, self.now)
        if breach is None:
            return
        b = breach.budget
        resets_at = breach.resets_at.isoformat() if breach.resets_at else ""
        period = b.period.name.lower()
        facts: dict[str, str] = {
            "budget_id": b.budget_id,
            "scope_key": b.scope_key,
            "scope_value": breach.value,
            "limit": str(b.limit),
            "used": str(breach.used),
            "remaining": str(breach.remaining),
            "resets_at": resets_at,
            "period": period,
            "required": str(amount),
        }
        first = self.budgets.first_refusal(breach, self.now)
        if b.member:
            if first:
                self._event(
                    events.MEMBER_LIMIT_REACHED,
                    **_event_facts(breach, amount, resets_at),
                    actor_id=actor_id,
                    request_id=request_id,
                )
            raise errors.precondition(
                "MEMBER_LIMIT_REACHED",
                f"{actor_id!r} has used {breach.used} of its {_LIMIT_NAME[b.period]} of "
                f"{b.limit}; {amount} more would exceed it"
                + (f" (resets at {resets_at})" if resets_at else ""),
                actor_id=actor_id,
                **facts,
            )
        if first:
            self._event(
                events.BUDGET_EXCEEDED,
                **_event_facts(breach, amount, resets_at),
                budget_id=b.budget_id,
                scope_key=b.scope_key,
                scope_value=breach.value,
                actor_id=actor_id,
                request_id=request_id,
            )
        raise errors.precondition(
            "BUDGET_EXCEEDED",
            f"budget {b.budget_id!r} ({b.scope_key}={breach.value}) has {breach.remaining} of "
            f"its {b.limit} left {_WITHIN[b.period]}; {amount} more would exceed it",
            **facts,
        )

    def _budget_hold(self, hold: Hold, delta: int) -> None:
        """A hold's credits were taken (delta > 0) or given back."""
        if self.budgets is not None:
            self.budgets.hold(hold.actor_id, hold.labels, delta, self.now)

    def _budget_charge(self, hold: Hold, charged: int) -> None:
        if self.budgets is not None:
            self.budgets.charge(hold.actor_id, hold.labels, charged, self.now)

    def _settle_budgets(self) -> None:
        """At a command's end: budget.threshold for each warn_at mark its spend crossed
        upward (once per period each)."""
        if self.budgets is None:
            return
        for c in self.budgets.settle():
            b = c.budget
            self._event(
                events.BUDGET_THRESHOLD,
                budget_id=b.budget_id,
                scope_key=b.scope_key,
                scope_value=c.value,
                period=b.period.name.lower(),
                percent=c.percent,
                limit=b.limit,
                used=c.used,
                remaining=max(b.limit - c.used, 0),
            )


# How refusals name a period: "its daily limit", "left this month (UTC)", "left in total".
_LIMIT_NAME = {
    Period.DAY: "daily limit",
    Period.WEEK: "weekly limit",
    Period.MONTH: "monthly limit",
    Period.TOTAL: "total limit",
}
_WITHIN = {
    Period.DAY: "today (UTC)",
    Period.WEEK: "this week (UTC)",
    Period.MONTH: "this month (UTC)",
    Period.TOTAL: "in total",
}


def _event_facts(breach: Breach, amount: int, resets_at: str) -> dict[str, object]:
    return {
        "period": breach.budget.period.name.lower(),
        "limit": breach.budget.limit,
        "used": breach.used,
        "remaining": breach.remaining,
        "resets_at": resets_at,
        "required": amount,
    }
