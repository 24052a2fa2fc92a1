/** Budgets, usage by label, alert thresholds and the runway against a real server (DESIGN §13). */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  BudgetExceeded,
  FailedPrecondition,
  InvalidArgument,
  LimitPeriod,
  MemberLimitReached,
  MeterClient,
} from "../src/index.js";
import { rid, shared, ws } from "./harness.js";

let meter: MeterClient;
before(() => {
  meter = new MeterClient({ target: shared().target });
});
after(() => meter.close());

describe("budgets", () => {
  test("a project budget refuses with BudgetExceeded and its numbers, and lists its standing", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 100 });
    const set = await meter.setBudget(w, "apollo-day", {
      key: "project",
      value: "apollo",
      period: "day",
      limit: 10,
      warnAt: [50, 90],
    });
    assert.deepEqual(
      ["project", "apollo", LimitPeriod.DAY, 10n, [50, 90], true],
      [set.scopeKey, set.scopeValue, set.period, set.limit, set.warnAt, set.enabled],
    );
    await meter.charge(w, rid(), "content.optimize", { amount: 4, labels: { project: "apollo" } });
    await meter.reserve(w, rid(), "content.optimize", { amount: 3, labels: { project: "apollo" } });

    const error = await meter
      .reserve(w, rid(), "content.optimize", { amount: 5, labels: { project: "apollo" } })
      .catch((e: unknown) => e);

    assert.ok(error instanceof BudgetExceeded, String(error));
    assert.ok(error instanceof FailedPrecondition);
    assert.ok(!(error instanceof MemberLimitReached));
    assert.deepEqual(
      {
        reason: "BUDGET_EXCEEDED",
        budgetId: "apollo-day",
        scopeKey: "project",
        scopeValue: "apollo",
        period: "day",
        limit: 10,
        used: 7,
        remaining: 3,
        required: 5,
      },
      {
        reason: error.reason,
        budgetId: error.budgetId,
        scopeKey: error.scopeKey,
        scopeValue: error.scopeValue,
        period: error.period,
        limit: error.limit,
        used: error.used,
        remaining: error.remaining,
        required: error.required,
      },
    );
    assert.ok(Date.parse(error.resetsAt) > Date.now(), error.resetsAt);
    const [listed, ...more] = await meter.budgets(w);
    assert.equal(more.length, 0);
    assert.deepEqual(["apollo-day", 7n, 3n], [listed?.budgetId, listed?.used, listed?.remaining]);
    assert.equal(Number(listed?.resetsAt?.seconds) * 1000, Date.parse(error.resetsAt));
  });

  test("an actor budget is a member limit; disabled or deleted, it refuses nothing", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 100 });
    await meter.setBudget(w, "ana-week", { key: "actor_id", value: "ana", period: "week", limit: 3 });

    const error = await meter.reserve(w, rid(), "content.optimize", { amount: 4, actor: "ana" }).catch((e: unknown) => e);
    assert.ok(error instanceof MemberLimitReached, String(error));
    assert.ok(error instanceof BudgetExceeded); // one instanceof catches every spend limit
    assert.deepEqual(["MEMBER_LIMIT_REACHED", "ana-week", 3], [error.reason, error.budgetId, error.limit]);

    const off = await meter.setBudget(w, "ana-week", {
      key: "actor_id",
      value: "ana",
      period: LimitPeriod.WEEK,
      limit: 3,
      enabled: false,
    });
    assert.equal(off.enabled, false);
    await meter.charge(w, rid(), "content.optimize", { amount: 4, actor: "ana" });
    assert.equal(await meter.deleteBudget(w, "ana-week"), true);
    assert.equal(await meter.deleteBudget(w, "ana-week"), false);
    assert.deepEqual([], await meter.budgets(w));
  });

  test("a default budget gives each value its own room; a bad one names its field", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 100 });
    await meter.setBudget(w, "per-team", { key: "team", period: "total", limit: 5n });
    await meter.charge(w, rid(), "content.optimize", { amount: 5, labels: { team: "ml" } });
    await meter.charge(w, rid(), "content.optimize", { amount: 2, labels: { team: "web" } });
    const error = await meter
      .charge(w, rid(), "content.optimize", { amount: 1, labels: { team: "ml" } })
      .catch((e: unknown) => e);
    assert.ok(error instanceof BudgetExceeded, String(error));
    assert.deepEqual(["ml", "total", ""], [error.scopeValue, error.period, error.resetsAt]);
    const [budget] = await meter.budgets(w);
    assert.deepEqual(
      [["ml", 5n, 0n], ["web", 2n, 3n]],
      (budget?.values ?? []).map((v) => [v.value, v.used, v.remaining]).sort(),
    );

    const bad = await meter.setBudget(w, "b", { key: "Project!", period: "month", limit: 1 }).catch((e: unknown) => e);
    assert.ok(bad instanceof InvalidArgument, String(bad));
    assert.deepEqual(["budget.scope_key"], bad.fieldViolations.map((v) => v.field));
    assert.throws(() => meter.setBudget(w, "b", { key: "project", period: "year" as "day", limit: 1 }), TypeError);
  });

  test("usage by label carries each value's budgets, holders included", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 100 });
    await meter.setBudget(w, "each", { key: "project", period: "month", limit: 30 });
    await meter.charge(w, rid(), "content.optimize", { amount: 12, labels: { project: "zeus" } });
    await meter.reserve(w, rid(), "content.optimize", { amount: 7, labels: { project: "hermes" } });

    const report = await meter.usage(w, "label", { labelKey: "project" });

    const rows = new Map(report.rows.map((r) => [r.key, r]));
    assert.deepEqual(["hermes", "zeus"], [...rows.keys()].sort());
    assert.deepEqual([12n, 1n, 0n], [rows.get("zeus")?.credits, rows.get("zeus")?.count, rows.get("zeus")?.held]);
    assert.deepEqual(
      [["each", 30n, 12n, 18n]],
      rows.get("zeus")?.budgets.map((b) => [b.budgetId, b.limit, b.used, b.remaining]),
    );
    assert.deepEqual([["each", 7n, 23n]], rows.get("hermes")?.budgets.map((b) => [b.budgetId, b.used, b.remaining]));
    const bad = await meter.usage(w, "label").catch((e: unknown) => e);
    assert.ok(bad instanceof InvalidArgument, String(bad));
    assert.deepEqual(["label_key"], bad.fieldViolations.map((v) => v.field));
  });
});

describe("runway", () => {
  test("setAlertThresholds takes runwayDays and the balance reports the runway", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 100 });
    const unburnt = (await meter.balance(w)).runway;
    assert.deepEqual([0, undefined, undefined], [unburnt?.burnPerDay, unburnt?.daysLeft, unburnt?.zeroAt]);

    const thresholds = await meter.setAlertThresholds(w, { low: 50, critical: 5, runwayDays: 60 });
    assert.deepEqual([50n, 5n, 60], [thresholds.low, thresholds.critical, thresholds.runwayDays]);
    // Without runwayDays the threshold stays as it is.
    const kept = await meter.setAlertThresholds(w, { low: 40, critical: 4 });
    assert.equal(kept.runwayDays, 60);

    await meter.charge(w, rid(), "content.optimize", { amount: 14 });
    const r = (await meter.balance(w)).runway;
    // 14 charged today: 2 a day over 7 days, so the 86 left last 43 days.
    assert.deepEqual([2, 43, 60], [r?.burnPerDay, r?.daysLeft, r?.runwayDays]);
    assert.ok(Math.abs((r?.burnPerDay30d ?? 0) - 14 / 30) < 1e-9);
    const days = (Number(r?.zeroAt?.seconds) * 1000 - Date.now()) / 86_400_000;
    assert.ok(days > 42.9 && days <= 43, String(days));
  });
});
