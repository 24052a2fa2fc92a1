"""The state machine of the model-based test: random calls to a real server, the model beside
it, and everything a user sees compared after every step.

Each step is one call (unary or a Stream item) or one move of the clock, on one of a few
workspaces, applied to the model (model.py) and to the server (driver.py). The call's answer
is compared, then the workspace's whole visible state: every balance field, the journal and
its balance_after chain, alerts, events (types, order, the balance each carries), the runway,
usage by operation, member and label with the budgets of each row, budgets, member limits,
the auto top-up rule and Audit. Hypothesis shrinks a
failure to the shortest sequence of steps that shows it and prints it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meterpb.v1 import meter_pb2 as pb
from tests.promises import model as m
from tests.promises.driver import CODES, Server, refusal

WORKSPACES = 3
ACTORS = ("", "ana", "ben")
# Labels jobs carry: budgets of the project and team keys govern them.
LABELS = ({}, {}, {"project": "p1"}, {"project": "p2"}, {"project": "p1", "team": "t1"})
LABEL_VALUES = {"actor_id": ("ana", "ben"), "project": ("p1", "p2"), "team": ("t1",)}
OPERATION = "content.optimize"
NOT_FOUND = m.RefusedError("NOT_FOUND", "WORKSPACE_NOT_FOUND")

amounts = st.integers(0, 130) | st.sampled_from([0, 1, 9, 10, 11, 90, 99, 100, 101])


@st.composite
def _budgets(draw: st.DrawFn) -> m.Budget:
    """A budget of one of a few ids, on the actor or a label, for one value or each."""
    key = draw(st.sampled_from(list(LABEL_VALUES)))
    return m.Budget(
        budget_id=f"budget-{draw(st.integers(0, 3))}",
        key=key,
        value=draw(st.sampled_from(("", *LABEL_VALUES[key]))),
        period=draw(st.sampled_from([m.DAY, m.WEEK, m.MONTH, m.TOTAL])),
        limit=draw(st.sampled_from([0, 20, 60, 150, 400])),
        warn_at=draw(st.sampled_from([(80,), (50,), (50, 90), (100,)])),
        enabled=draw(st.sampled_from([True, True, True, False])),
    )


budgets = _budgets()
minutes = st.integers(1, 90)


def _ts(at: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(at)
    return t


def _duration(d: timedelta) -> Duration:
    out = Duration()
    out.FromTimedelta(d)
    return out


def _time(t: Timestamp) -> datetime | None:
    if not t.seconds and not t.nanos:
        return None
    return t.ToDatetime(tzinfo=UTC)


# Event data: the fields the model keeps, where the server's data has them.
_NESTED = {"hold.expired": "hold", "credits.expiring": "lot"}


def _event_fields(type_: str, data: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    source = data.get(_NESTED.get(type_, ""), data)
    out = {}
    for k in keys:
        v = source.get("lot_id" if k == "lot" else k)
        out[k] = int(v) if k == "lot" else v
    return out


class Promises(RuleBasedStateMachine):
    """A few workspaces, driven at random, compared with the model after every step."""

    server: Server  # set by the test before it runs
    # Where every example's clock starts (set by the test once per run, so that a replay while
    # shrinking meets the same days, weeks and months): a day past the real time, on a whole
    # minute, since grants must expire in the future by the real clock too.
    start = datetime(2100, 1, 1, tzinfo=UTC)
    steps = 0  # steps run, over every example (the test reports it)
    seen: Counter[str] = Counter()  # the events the models wrote, over every example

    def __init__(self) -> None:
        super().__init__()
        self.now = self.start  # the ledger's time, pinned
        self.server.pin(self.now)
        prefix = f"pm-{uuid.uuid4().hex[:10]}"
        self.model = {
            f"{prefix}-{i}": m.Workspace(f"{prefix}-{i}", self.now) for i in range(WORKSPACES)
        }
        self.created: set[str] = set()
        self.rids: dict[str, list[str]] = {ws: [] for ws in self.model}
        self.n = 0

    # Helpers.

    def _ws(self, i: int) -> str:
        return list(self.model)[i % WORKSPACES]

    def _amount(
        self, ws: str, data: st.DataObject, amount: int, actor: str, labels: dict[str, str]
    ) -> int:
        """Now and then, instead of `amount`, the room left in a budget the job falls under,
        or one credit either side of it: where a budget refuses or lets through."""
        w = self.model[ws]
        applying = w.applying(actor, labels)
        if not applying or data.draw(st.booleans(), label="not at a budget's edge"):
            return amount
        b, value = data.draw(st.sampled_from(applying), label="budget")
        room = b.limit - w.spend_of(b, value, self.now)
        return max(room + data.draw(st.sampled_from([-1, 0, 1]), label="off by"), 0)

    def _rid(self, ws: str, data: st.DataObject, kind: str, reuse: bool) -> str:
        """A new request id, or (reuse) one this workspace has used for anything."""
        if reuse and self.rids[ws]:
            return data.draw(st.sampled_from(self.rids[ws]), label=f"{kind} request id")
        self.n += 1
        rid = f"{kind}-{self.n}"
        self.rids[ws].append(rid)
        return rid

    def _run(self, ws: str, model_call: Any, server_call: Any) -> Any:
        """One call on both sides: the model's answer (or refusal) and the server's, compared
        as far as `server_call`'s caller compares them; returns (model, server) answers."""
        w = self.model[ws]
        want: Any
        if ws not in self.created:
            want = NOT_FOUND
        else:
            w.begin()
            try:
                want = model_call(w)
            except m.RefusedError as e:
                want = e
                Promises.seen[e.reason] += 1
            finally:
                w.end(self.now)
        try:
            got = server_call()
        except m.RefusedError as e:
            got = e
        if isinstance(want, m.RefusedError) or isinstance(got, m.RefusedError):
            assert isinstance(got, m.RefusedError), (
                f"the call succeeded ({got}); the model refused {want}"
            )
            assert isinstance(want, m.RefusedError), (
                f"the call was refused {got}; the model answered {want}"
            )
            assert (want.code, want.reason) == (got.code, got.reason), f"model {want}, server {got}"
            return None
        return want, got

    def _item(self, kind: str, request: Any) -> Any:
        """A Stream item's result, or its refusal raised as the model's."""
        [result] = self.server.stream.send([pb.StreamItem(**{kind: request})])
        if result.status.code:
            raise refusal(CODES[result.status.code], list(result.status.details))
        return result

    # The calls.

    @initialize(
        amounts_=st.lists(st.integers(1, 300), min_size=WORKSPACES, max_size=WORKSPACES),
        budgets_=st.lists(
            st.lists(budgets, min_size=1, max_size=3), min_size=WORKSPACES, max_size=WORKSPACES
        ),
    )
    def open_workspaces(self, amounts_: list[int], budgets_: list[list[m.Budget]]) -> None:
        """Every workspace starts with a grant and a few budgets (more come as the steps
        go)."""
        for i, amount in enumerate(amounts_):
            ws = self._ws(i)
            rid = self._rid(ws, None, "grant", False)  # type: ignore[arg-type]
            self.created.add(ws)
            request = pb.GrantCreditsRequest(workspace_id=ws, request_id=rid, amount=amount)
            self._run(
                ws,
                lambda w, rid=rid, a=amount: w.grant(rid, a, "", None, None, None, False, self.now),
                lambda r=request: self.server.call("GrantCredits", r),
            )
            self._check(ws)
            for b in budgets_[i]:
                self._set_budget(ws, b, False)

    @rule(
        i=st.integers(0, WORKSPACES - 1),
        data=st.data(),
        amount=st.integers(1, 300),
        package=st.sampled_from(["", "", "", "Starter", "Basic"]),
        expires_in=st.none()
        | minutes
        | st.sampled_from([60 * 24 * d for d in (1, 6, 7, 8, 29, 31, 400)]),
        category=st.sampled_from([None, m.PAID, m.PROMOTIONAL, m.MANUAL]),
        priority=st.none() | st.sampled_from([0, 10, 50, 90]),
        pending=st.booleans(),
        reuse=st.booleans(),
    )
    def grant(self, i, data, amount, package, expires_in, category, priority, pending, reuse):
        ws = self._ws(i)
        rid = self._rid(ws, data, "grant", reuse and ws in self.created)
        expires_at = None if expires_in is None else self.now + timedelta(minutes=expires_in)
        if package:
            amount = 0
        request = pb.GrantCreditsRequest(
            workspace_id=ws, request_id=rid, amount=amount, package=package, pending=pending
        )
        if expires_at is not None:
            request.expires_at.CopyFrom(_ts(expires_at))
        if category is not None:
            request.category = category
        if priority is not None:
            request.priority = priority
        self.created.add(ws)  # a grant creates its workspace
        out = self._run(
            ws,
            lambda w: w.grant(
                rid, amount, package, expires_at, category, priority, pending, self.now
            ),
            lambda: self.server.call("GrantCredits", request),
        )
        if out is not None:
            (entry, lot), got = out
            assert (lot.amount, lot.state) == (got.lot.amount, _lot_state(got.lot.state))
            if entry is None:
                assert not got.HasField("entry")
            else:
                assert (entry.amount, entry.balance_after) == (
                    got.entry.amount,
                    got.entry.balance_after,
                )
        self._check(ws)

    def _pending_or_any(self, ws: str, data: st.DataObject) -> str:
        lots = [lt.request_id for lt in self.model[ws].lots]
        pending = [lt.request_id for lt in self.model[ws].lots if lt.state == "pending"]
        choices = pending or lots or ["never-granted"]
        if data.draw(st.booleans(), label="any grant"):
            choices = lots + self.rids[ws] + ["never-granted"]
        return data.draw(st.sampled_from(choices), label="grant request id")

    @rule(i=st.integers(0, WORKSPACES - 1), data=st.data())
    def confirm(self, i, data):
        ws = self._ws(i)
        rid = self._pending_or_any(ws, data)
        out = self._run(
            ws,
            lambda w: w.confirm(rid, self.now),
            lambda: self.server.call(
                "ConfirmGrant", pb.ConfirmGrantRequest(workspace_id=ws, request_id=rid)
            ),
        )
        if out is not None:
            lot, got = out
            assert (lot.state, lot.amount) == (_lot_state(got.lot.state), got.lot.amount)
        self._check(ws)

    @rule(i=st.integers(0, WORKSPACES - 1), data=st.data())
    def void(self, i, data):
        ws = self._ws(i)
        rid = self._pending_or_any(ws, data)
        out = self._run(
            ws,
            lambda w: w.void(rid),
            lambda: self.server.call(
                "VoidGrant", pb.VoidGrantRequest(workspace_id=ws, request_id=rid, reason="unpaid")
            ),
        )
        if out is not None:
            lot, got = out
            assert lot.state == _lot_state(got.lot.state)
        self._check(ws)

    @rule(
        i=st.integers(0, WORKSPACES - 1),
        data=st.data(),
        amount=amounts,
        actor=st.sampled_from(ACTORS),
        labels=st.sampled_from(LABELS),
        ttl=minutes,
        stream=st.booleans(),
        reuse=st.booleans(),
    )
    def reserve(self, i, data, amount, actor, labels, ttl, stream, reuse):
        ws = self._ws(i)
        rid = self._rid(ws, data, "job", reuse)
        amount = self._amount(ws, data, amount, actor, labels)
        # Holds end on a half minute: never at one of the clock's whole-minute steps.
        ttl_d = timedelta(minutes=ttl, seconds=30)
        request = pb.ReserveRequest(
            workspace_id=ws,
            request_id=rid,
            operation=OPERATION,
            amount=amount,
            actor_id=actor,
            ttl=_duration(ttl_d),
            labels=labels,
        )
        call = (
            (lambda: self._item("reserve", request).hold)
            if stream
            else (lambda: self.server.call("Reserve", request).hold)
        )
        out = self._run(
            ws, lambda w: w.reserve(rid, amount, actor, ttl_d, OPERATION, self.now, labels), call
        )
        if out is not None:
            hold, got = out
            assert (str(hold.hold_id), hold.amount, _hold_state(hold.state)) == (
                got.hold_id,
                got.amount,
                got.state,
            )
        self._check(ws)

    def _hold_rid(self, ws: str, data: st.DataObject) -> str:
        holds = list(self.model[ws].holds)
        held = [r for r, h in self.model[ws].holds.items() if h.state == "held"]
        choices = held or holds or ["never-reserved"]
        if data.draw(st.integers(0, 4), label="any id") == 0:
            choices = holds + self.rids[ws] + ["never-reserved"]
        return data.draw(st.sampled_from(choices), label="hold request id")

    @rule(
        i=st.integers(0, WORKSPACES - 1),
        data=st.data(),
        how=st.sampled_from(["under", "at", "over", "zero", "far over"]),
        stream=st.booleans(),
    )
    def commit(self, i, data, how, stream):
        ws = self._ws(i)
        rid = self._hold_rid(ws, data)
        hold = self.model[ws].holds.get(rid)
        held = hold.amount if hold is not None else 5
        actual = {
            "under": max(held - 1 - data.draw(st.integers(0, 20), label="less"), 0),
            "at": held,
            "over": held + data.draw(st.integers(1, 20), label="more"),
            "zero": 0,
            "far over": held + 500,
        }[how]
        if (
            hold is not None
            and hold.state == "committed"
            and data.draw(st.booleans(), label="replay")
        ):
            actual = hold.commit_params[1]
        request = pb.CommitRequest(workspace_id=ws, request_id=rid, amount=actual)
        call = (
            (lambda: self._item("commit", request).commit)
            if stream
            else (lambda: self.server.call("Commit", request))
        )
        out = self._run(ws, lambda w: w.commit(rid, actual, self.now), call)
        if out is not None:
            h, got = out
            want = (h.charged, h.released, h.shortfall, h.late, _hold_state(h.state))
            assert want == (got.charged, got.released, got.shortfall, got.late, got.hold.state)
        self._check(ws)

    @rule(i=st.integers(0, WORKSPACES - 1), data=st.data(), stream=st.booleans())
    def release(self, i, data, stream):
        ws = self._ws(i)
        rid = self._hold_rid(ws, data)
        request = pb.ReleaseRequest(workspace_id=ws, request_id=rid)
        if stream:
            out = self._run(
                ws, lambda w: w.release(rid, self.now), lambda: self._item("release", request).hold
            )
            if out is not None:
                (h, _), got = out
                assert _hold_state(h.state) == got.state
        else:
            out = self._run(
                ws, lambda w: w.release(rid, self.now), lambda: self.server.call("Release", request)
            )
            if out is not None:
                (h, released), got = out
                assert (released, _hold_state(h.state)) == (got.released, got.hold.state)
        self._check(ws)

    @rule(i=st.integers(0, WORKSPACES - 1), data=st.data(), ttl=minutes, stream=st.booleans())
    def extend(self, i, data, ttl, stream):
        ws = self._ws(i)
        rid = self._hold_rid(ws, data)
        ttl_d = timedelta(minutes=ttl, seconds=30)
        request = pb.ExtendRequest(workspace_id=ws, request_id=rid, ttl=_duration(ttl_d))
        call = (
            (lambda: self._item("extend", request).hold)
            if stream
            else (lambda: self.server.call("Extend", request).hold)
        )
        out = self._run(ws, lambda w: w.extend(rid, ttl_d, self.now), call)
        if out is not None:
            h, got = out
            assert h.expires_at == _time(got.expires_at)
        self._check(ws)

    @rule(
        i=st.integers(0, WORKSPACES - 1),
        data=st.data(),
        amount=amounts,
        actor=st.sampled_from(ACTORS),
        labels=st.sampled_from(LABELS),
        stream=st.booleans(),
        reuse=st.booleans(),
    )
    def charge(self, i, data, amount, actor, labels, stream, reuse):
        ws = self._ws(i)
        rid = self._rid(ws, data, "job", reuse)
        amount = self._amount(ws, data, amount, actor, labels)
        request = pb.ChargeRequest(
            workspace_id=ws,
            request_id=rid,
            operation=OPERATION,
            amount=amount,
            actor_id=actor,
            labels=labels,
        )
        call = (
            (lambda: self._item("charge", request).charge)
            if stream
            else (lambda: self.server.call("Charge", request))
        )
        out = self._run(
            ws, lambda w: w.charge(rid, amount, actor, OPERATION, self.now, labels), call
        )
        if out is not None:
            h, got = out
            assert (h.charged, h.shortfall) == (got.charged, got.shortfall)
        self._check(ws)

    @rule(
        i=st.integers(0, WORKSPACES - 1),
        data=st.data(),
        part=st.sampled_from(["all", "one", "some", "too much"]),
        reuse=st.booleans(),
    )
    def refund(self, i, data, part, reuse):
        ws = self._ws(i)
        charged = [r for r, h in self.model[ws].holds.items() if h.state == "committed"]
        charge = data.draw(
            st.sampled_from(charged or list(self.model[ws].holds) or ["never-charged"]),
            label="charge request id",
        )
        hold = self.model[ws].holds.get(charge)
        left = 0 if hold is None else hold.charged - hold.refunded
        amount = {"all": 0, "one": 1, "some": max(left // 2, 1), "too much": left + 1}[part]
        rid = self._rid(ws, data, "refund", reuse)
        request = pb.RefundRequest(
            workspace_id=ws,
            request_id=rid,
            charge_request_id=charge,
            amount=amount,
            reason="support",
        )
        out = self._run(
            ws,
            lambda w: w.refund(rid, charge, amount, self.now),
            lambda: self.server.call("Refund", request),
        )
        if out is not None:
            entry, got = out
            assert (entry.amount, entry.balance_after) == (
                got.entry.amount,
                got.entry.balance_after,
            )
        self._check(ws)

    @rule(
        i=st.integers(0, WORKSPACES - 1),
        data=st.data(),
        amount=st.integers(-150, 150).filter(bool),
        reuse=st.booleans(),
    )
    def adjust(self, i, data, amount, reuse):
        ws = self._ws(i)
        rid = self._rid(ws, data, "adjust", reuse)
        request = pb.AdjustCreditsRequest(
            workspace_id=ws, request_id=rid, amount=amount, reason="correction"
        )
        out = self._run(
            ws,
            lambda w: w.adjust(rid, amount, "correction", self.now),
            lambda: self.server.call("AdjustCredits", request),
        )
        if out is not None:
            entry, got = out
            assert (entry.amount, entry.balance_after) == (
                got.entry.amount,
                got.entry.balance_after,
            )
        self._check(ws)

    @rule(
        i=st.integers(0, WORKSPACES - 1),
        low=st.sampled_from([0, 10, 50, 100, 150, 200]),
        critical=st.sampled_from([0, 5, 10, 40]),
        runway_days=st.none() | st.sampled_from([0, 1, 3, 7, 30]),
    )
    def thresholds(self, i, low, critical, runway_days):
        ws = self._ws(i)
        critical = min(critical, low)
        request = pb.SetAlertThresholdsRequest(workspace_id=ws, low=low, critical=critical)
        if runway_days is not None:
            request.runway_days = runway_days
        out = self._run(
            ws,
            lambda w: w.set_thresholds(low, critical, runway_days),
            lambda: self.server.call("SetAlertThresholds", request),
        )
        if out is not None:
            _, got = out
            want_days = self.model[ws].runway_days
            assert (low, critical, want_days) == (got.low, got.critical, got.runway_days)
        self._check(ws)

    @rule(
        i=st.integers(0, WORKSPACES - 1),
        actor=st.sampled_from(ACTORS),
        period=st.sampled_from([m.DAY, m.WEEK, m.MONTH]),
        limit=st.none() | st.sampled_from([0, 5, 50, 120, 300]),
    )
    def member_limit(self, i, actor, period, limit):
        ws = self._ws(i)
        request = pb.SetMemberLimitRequest(workspace_id=ws, actor_id=actor, period=period)
        if limit is not None:
            request.limit = limit
        out = self._run(
            ws,
            lambda w: w.set_limit(actor, period, limit),
            lambda: self.server.call("SetMemberLimit", request),
        )
        if out is not None and limit is not None:
            _, got = out
            w = self.model[ws]
            used = w.spend_of(w.budgets[m.member_budget_id(actor, period)], actor, self.now)
            want = (limit, used if actor else 0, max(limit - used, 0) if actor else limit)
            assert want == (got.limit, got.used, got.remaining)
        self._check(ws)

    @rule(i=st.integers(0, WORKSPACES - 1), b=budgets, warn_default=st.booleans())
    def set_budget(self, i: int, b: m.Budget, warn_default: bool) -> None:
        """A budget of a key (the actor or a label), for one value or each value on its own;
        SetBudget with an id already used replaces that budget."""
        self._set_budget(self._ws(i), b, warn_default)

    def _set_budget(self, ws: str, b: m.Budget, warn_default: bool) -> None:
        # No warn_at in the request is 80%.
        warn_at = [] if warn_default and b.warn_at == (80,) else list(b.warn_at)
        request = pb.SetBudgetRequest(
            workspace_id=ws,
            budget=pb.Budget(
                budget_id=b.budget_id,
                scope_key=b.key,
                scope_value=b.value,
                period=b.period,  # type: ignore[arg-type]
                limit=b.limit,
                warn_at=warn_at,
                enabled=b.enabled,
            ),
        )
        out = self._run(
            ws,
            lambda w: w.set_budget(b),
            lambda: self.server.call("SetBudget", request),
        )
        if out is not None:
            _, got = out
            [want] = [v for v in self.model[ws].budget_views(self.now) if v[0] == b.budget_id]
            assert want == _budget(got), f"SetBudget's answer in {ws}"
        self._check(ws)

    @rule(i=st.integers(0, WORKSPACES - 1), n=st.integers(0, 4))
    def delete_budget(self, i, n):
        ws = self._ws(i)
        budget_id = f"budget-{n}"
        out = self._run(
            ws,
            lambda w: w.delete_budget(budget_id),
            lambda: self.server.call(
                "DeleteBudget", pb.DeleteBudgetRequest(workspace_id=ws, budget_id=budget_id)
            ),
        )
        if out is not None:
            deleted, got = out
            assert deleted == got.deleted
        self._check(ws)

    @rule(
        i=st.integers(0, WORKSPACES - 1),
        enabled=st.booleans(),
        threshold=st.sampled_from([20, 60, 120]),
        package=st.sampled_from(["", "Starter"]),
        monthly_limit=st.sampled_from([1, 2, 5]),
        off=st.integers(0, 5),
    )
    def auto_topup(self, i, enabled, threshold, package, monthly_limit, off):
        ws = self._ws(i)
        amount = 0 if package else 80
        if off == 0:  # switch the rule off, keeping it
            enabled, threshold, package, amount, monthly_limit = False, 0, "", 0, 0
        request = pb.SetAutoTopUpRequest(
            workspace_id=ws,
            enabled=enabled,
            threshold=threshold,
            package=package,
            amount=amount,
            monthly_limit=monthly_limit,
        )
        self._run(
            ws,
            lambda w: w.set_auto_topup(
                enabled, threshold, package, amount, monthly_limit, self.now
            ),
            lambda: self.server.call("SetAutoTopUp", request),
        )
        self._check(ws)

    def _outstanding(self, i: int) -> bool:
        t = self.model[self._ws(i)].topup
        return t is not None and bool(t.outstanding)

    @precondition(lambda self: any(self._outstanding(i) for i in range(WORKSPACES)))
    @rule(i=st.integers(0, WORKSPACES - 1), pay=st.booleans())
    def answer_topup(self, i, pay):
        """The payment handler: a grant with the request's id, or a failure report."""
        ws = self._ws(i)
        t = self.model[ws].topup
        if t is None or not t.outstanding:
            return
        rid = t.outstanding
        if pay:
            amount = 0 if t.package else t.amount
            request = pb.GrantCreditsRequest(
                workspace_id=ws, request_id=rid, amount=amount, package=t.package
            )
            out = self._run(
                ws,
                lambda w: w.grant(rid, amount, t.package, None, None, None, False, self.now),
                lambda: self.server.call("GrantCredits", request),
            )
            if out is not None:
                self.rids[ws].append(rid)
        else:
            self._run(
                ws,
                lambda w: w.report_topup_failed(rid),
                lambda: self.server.call(
                    "ReportTopUpFailed",
                    pb.ReportTopUpFailedRequest(workspace_id=ws, request_id=rid, reason="declined"),
                ),
            )
        self._check(ws)

    @rule(
        step=st.sampled_from(["minutes", "hours", "days", "next day", "next week", "next month"]),
        n=st.integers(1, 40),
    )
    def advance(self, step, n):
        """Time passes: holds and lots expire, periods turn, notices fall due."""
        if step == "minutes":
            self.now += timedelta(minutes=n)
        elif step == "hours":
            self.now += timedelta(hours=n % 30)
        elif step == "days":
            self.now += timedelta(days=n % 10 + 1)
        else:
            period = {"next day": m.DAY, "next week": m.WEEK, "next month": m.MONTH}[step]
            self.now = m.period_end(period, self.now)  # exactly on the boundary
        self.server.pin(self.now)
        for w in self.model.values():
            w.now = self.now
        self.server.sweep()
        for ws in self.created:
            self.model[ws].sweep(self.now)
        for ws in sorted(self.created):
            self._check(ws)

    @rule(data=st.data(), amounts_=st.lists(amounts, min_size=WORKSPACES, max_size=WORKSPACES))
    def stream_batch(self, data, amounts_):
        """One Stream message with a reserve or a charge for every workspace: items of several
        workspaces in one batch."""
        items, expected = [], []
        for i, amount in enumerate(amounts_):
            ws = self._ws(i)
            rid = self._rid(ws, data, "job", False)
            if data.draw(st.booleans(), label=f"charge in {i}"):
                r = pb.ChargeRequest(
                    workspace_id=ws, request_id=rid, operation=OPERATION, amount=amount
                )
                items.append(pb.StreamItem(charge=r))
                expected.append(
                    (ws, lambda w, rid=rid, a=amount: w.charge(rid, a, "", OPERATION, self.now))
                )
            else:
                ttl = timedelta(minutes=30, seconds=30)
                r2 = pb.ReserveRequest(
                    workspace_id=ws,
                    request_id=rid,
                    operation=OPERATION,
                    amount=amount,
                    ttl=_duration(ttl),
                )
                items.append(pb.StreamItem(reserve=r2))
                expected.append(
                    (
                        ws,
                        lambda w, rid=rid, a=amount, t=ttl: w.reserve(
                            rid, a, "", t, OPERATION, self.now
                        ),
                    )
                )
        results = self.server.stream.send(items)
        for (ws, model_call), result in zip(expected, results, strict=True):
            w = self.model[ws]
            if ws not in self.created:
                want: Any = NOT_FOUND
            else:
                w.begin()
                try:
                    want = model_call(w)
                except m.RefusedError as e:
                    want = e
                finally:
                    w.end(self.now)
            if result.status.code:
                got = refusal(CODES[result.status.code], list(result.status.details))
                assert isinstance(want, m.RefusedError), (want, got)
                assert (want.code, want.reason) == (got.code, got.reason), (
                    f"model {want}, server {got}"
                )
            else:
                assert not isinstance(want, m.RefusedError), (want, result)
        for ws in sorted(self.created):
            self._check(ws)

    # What a user sees.

    @invariant()
    def count(self) -> None:
        Promises.steps += 1  # after every step (and once after the workspaces open)

    def _check(self, ws: str) -> None:
        if ws not in self.created:
            return
        w = self.model[ws]
        now = self.now
        s = self.server
        b = s.balance(ws)
        v = w.view(now)
        last = None
        if b.HasField("last_transaction"):
            t = b.last_transaction
            last = (_entry_kind(t.kind), t.amount, t.operation)
        got = {
            "available": b.available,
            "held": b.held,
            "lifetime_used": b.lifetime_used,
            "lifetime_granted": b.lifetime_granted,
            "level": b.level,
            "pending": b.pending,
            "by_category": sorted((c.category, c.available) for c in b.by_category if c.available),
            "last": last,
            "expiring_soon": (b.expiring_soon.credits, _time(b.expiring_soon.earliest)),
            "thresholds": (b.thresholds.low, b.thresholds.critical),
        }
        assert v == got, f"balance of {ws}"
        r = b.runway
        days_left = r.days_left if r.HasField("days_left") else None
        want_r = w.runway_view(now)
        got_r = (
            r.burn_per_day,
            r.burn_per_day_30d,
            days_left,
            _time(r.zero_at),
            _time(r.topup_at),
            r.runway_days,
        )
        assert _near(want_r, got_r), f"runway of {ws}: model {want_r}, server {got_r}"
        entries = [
            (
                _entry_kind(e.kind),
                e.amount,
                e.balance_after,
                e.request_id,
                e.operation,
                e.actor_id,
                e.shortfall,
                e.late,
            )
            for e in s.entries(ws)
        ]
        want_entries = [
            (
                e.kind,
                e.amount,
                e.balance_after,
                e.request_id,
                e.operation,
                e.actor,
                e.shortfall,
                e.late,
            )
            for e in w.journal
        ]
        assert want_entries == entries, f"journal of {ws}"
        alerts = [
            (a.kind, a.available, a.threshold, a.required, a.request_id) for a in s.alerts(ws)
        ]
        want_alerts = [
            (a.kind, a.available, a.threshold, a.required, a.request_id) for a in w.alerts
        ]
        assert want_alerts == alerts, f"alerts of {ws}"
        events = s.events_of(ws, len(w.events))
        assert [n for n, _, _ in events] == list(range(1, len(events) + 1)), "event sequences"
        got_events = [
            (t, _event_fields(t, d, list(e.fields)), d["balance"])
            for (_, t, d), e in zip(events, w.events, strict=False)
        ]
        want_events = [(e.type, e.fields, e.balance) for e in w.events]
        assert [t for _, t, _ in events] == [e.type for e in w.events], f"event types of {ws}"
        assert want_events == got_events, f"events of {ws}"
        for by, grouping, key in (
            ("operation", pb.USAGE_GROUPING_OPERATION, ""),
            ("actor", pb.USAGE_GROUPING_ACTOR, "actor_id"),
            ("label", pb.USAGE_GROUPING_LABEL, "project"),
            ("label", pb.USAGE_GROUPING_LABEL, "team"),
        ):
            u = s.usage(ws, grouping, key if by == "label" else "")
            rows = [(r.key, r.credits, r.count, r.held) for r in u.rows]
            assert w.usage(by, now, key) == rows, f"usage of {ws} by {by} {key}"
            for r in u.rows:
                got_b = [(x.budget_id, x.period, x.limit, x.used, x.remaining) for x in r.budgets]
                want_b = w.standings(key, r.key, now) if key and r.key else []
                assert want_b == got_b, f"budgets of {key}={r.key!r} in {ws}'s usage"
                if by == "actor":
                    want_limits = [x[1:] for x in w.limit_views([r.key], now)]
                    got_limits = [(x.period, x.limit, x.used, x.remaining) for x in r.limits]
                    assert want_limits == got_limits, f"limits of {r.key!r} in {ws}'s usage"
        limits = [(x.actor_id, x.period, x.limit, x.used, x.remaining) for x in s.limits(ws)]
        assert w.limit_views(None, now) == limits, f"member limits of {ws}"
        budgets = [_budget(x) for x in s.budgets(ws)]
        assert w.budget_views(now) == budgets, f"budgets of {ws}"
        t = s.topup(ws)
        got_topup = (
            t.enabled,
            t.threshold,
            t.package,
            t.amount,
            t.monthly_limit,
            t.failures,
            t.outstanding_request_id,
            t.requested_this_month,
        )
        assert w.topup_view(now) == got_topup, f"auto top-up of {ws}"
        assert [] == s.audit(ws), f"audit of {ws}"

    def teardown(self) -> None:
        self.server.pin(None)
        for ws in self.created:
            Promises.seen.update(e.type for e in self.model[ws].events)


def _budget(b: pb.Budget) -> tuple[Any, ...]:
    """A Budget message as the model's budget_views shows one."""
    values = [(x.value, x.used, x.remaining) for x in b.values]
    return (
        b.budget_id,
        b.scope_key,
        b.scope_value,
        b.period,
        b.limit,
        tuple(b.warn_at),
        b.enabled,
        b.used,
        b.remaining,
        values,
    )


def _near(want: tuple[Any, ...], got: tuple[Any, ...]) -> bool:
    """The runway: the burn exactly, days to within a microsecond's rounding."""
    if len(want) != len(got):
        return False
    for a, b in zip(want, got, strict=True):
        if isinstance(a, float) and isinstance(b, float):
            if abs(a - b) > 1e-6:
                return False
        elif isinstance(a, datetime) and isinstance(b, datetime):
            if abs(a - b) > timedelta(milliseconds=1):
                return False
        elif a != b:
            return False
    return True


def _hold_state(state: str) -> int:
    return {"held": 1, "committed": 2, "released": 3, "expired": 4}[state]


def _lot_state(state: int) -> str:
    return {1: "active", 2: "pending", 3: "confirmed", 4: "voided"}[state]


def _entry_kind(kind: int) -> str:
    return {1: "grant", 2: "charge", 3: "expire", 4: "adjust", 5: "refund"}[kind]
