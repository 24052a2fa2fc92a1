"""Member limits (DESIGN.md §10): refusing what would take a member past a limit."""

from __future__ import annotations

from meter import errors
from meter.events import types as events
from meter.ledger.book.state import BookState


class MemberLimitRules(BookState):
    """Member limits on holds and charges."""

    __slots__ = ()  # the state's slots are BookState's

    def _require_within_limit(self, actor_id: str, amount: int, request_id: str) -> None:
        """Refuse what would take a member past one of its limits (DESIGN.md §10); the first
        refusal of a period writes a member.limit_reached event."""
        assert self.members is not None
        breach = self.members.breach(actor_id, amount, self.now)
        if breach is None:
            return
        period = breach.period.name.lower()
        resets_at = breach.resets_at.isoformat()
        if self.members.notice(actor_id, breach.period, self.now):
            self._event(
                events.MEMBER_LIMIT_REACHED,
                actor_id=actor_id,
                period=period,
                limit=breach.limit,
                used=breach.used,
                remaining=breach.remaining,
                resets_at=resets_at,
                required=amount,
                request_id=request_id,
            )
        raise errors.precondition(
            "MEMBER_LIMIT_REACHED",
            f"{actor_id!r} has used {breach.used} of its {period}ly limit of {breach.limit}; "
            f"{amount} more would exceed it (resets at {resets_at})",
            actor_id=actor_id,
            period=period,
            limit=str(breach.limit),
            used=str(breach.used),
            remaining=str(breach.remaining),
            resets_at=resets_at,
            required=str(amount),
        )
