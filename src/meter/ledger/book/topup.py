"""Auto top-up (DESIGN.md §10): the rule, its requests when available falls, their failures."""

from __future__ import annotations

from meter import errors
from meter.events import types as events
from meter.ledger.book.state import BookState
from meter.ledger.commands import ReportTopUpFailedCmd, SetAutoTopUpCmd
from meter.ledger.model import TopUpView
from meter.ledger.policies import TOPUP_MAX_FAILURES, TopUp


class TopUpRules(BookState):
    """The auto top-up rule and its requests."""

    __slots__ = ()  # the state's slots are BookState's

    def set_auto_topup(self, cmd: SetAutoTopUpCmd) -> TopUpView:
        """Set the auto top-up rule; a request is made at once if the balance is below it."""
        t = self.topup
        if not cmd.enabled and not cmd.package and not cmd.amount:
            # Disable, keeping the rule as it is.
            if t is None:
                return TopUpView(self.account.workspace_id, False, 0, "", 0, 0, 0, "", None, 0)
            t.enabled = False
        elif t is None:
            t = self.topup = TopUp(
                cmd.enabled, cmd.threshold, cmd.package, cmd.amount, cmd.monthly_limit
            )
        else:
            if cmd.enabled and not t.enabled:
                t.failures = 0  # enabled again: a fresh start
            t.enabled, t.threshold, t.monthly_limit = cmd.enabled, cmd.threshold, cmd.monthly_limit
            t.package, t.amount = cmd.package, cmd.amount
        self.topup_dirty = True
        self.account.auto_topup = True
        self.account_dirty = True
        if self.topup is not None:
            self._top_up()  # the rule is new or changed: a request at once if it is due
        return self.topup_view()

    def report_topup_failed(self, cmd: ReportTopUpFailedCmd) -> TopUpView:
        """The payment of a top-up request failed; TOPUP_MAX_FAILURES in a row disable the rule.

        Raises:
            MeterError: TOPUP_NOT_OUTSTANDING.
        """
        t = self.topup
        if t is not None and t.last_failed == cmd.request_id and cmd.request_id:
            return self.topup_view()  # a replay
        if t is None or not t.outstanding or t.outstanding != cmd.request_id:
            outstanding = t.outstanding if t is not None else ""
            raise errors.precondition(
                "TOPUP_NOT_OUTSTANDING",
                f"{cmd.request_id!r} is not the outstanding top-up request"
                + (f" ({outstanding!r} is)" if outstanding else " (none is)"),
                request_id=cmd.request_id,
                outstanding=outstanding,
            )
        t.outstanding, t.last_failed = "", cmd.request_id
        t.failures += 1
        self.topup_dirty = True
        self._event(
            events.TOPUP_FAILED, request_id=cmd.request_id, reason=cmd.reason, failures=t.failures
        )
        if t.failures >= TOPUP_MAX_FAILURES:
            t.enabled = False
            self._event(
                events.TOPUP_DISABLED,
                failures=t.failures,
                reason=f"{t.failures} top-up payments failed in a row",
            )
        return self.topup_view()

    def topup_view(self) -> TopUpView:
        assert self.topup is not None
        return self.topup.view(self.account.workspace_id, self.now)

    def _top_up(self) -> None:
        """Request a top-up when available is below the rule's threshold and none is
        outstanding: the event is written in the transaction of the change that crossed it."""
        t = self.topup
        assert t is not None
        before = t.outstanding
        t.lapse(self.now)
        if t.outstanding != before:
            self.topup_dirty = True
        if not t.due(self.account.available, self.now):
            return
        request_id = t.request(self.account.workspace_id, self.now)
        self.topup_dirty = True
        self._event(
            events.TOPUP_REQUESTED,
            request_id=request_id,
            package=t.package,
            amount=t.amount,
            threshold=t.threshold,
            requested_this_month=t.month_count,
            monthly_limit=t.monthly_limit,
        )
