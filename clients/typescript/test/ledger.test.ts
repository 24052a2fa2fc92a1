/** Holds, charges, grants and their refusals against a real server, through MeterClient. */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  HoldState,
  InsufficientCredits,
  InvalidArgument,
  MeterClient,
  NotFound,
  RequestIdReused,
  requestIdFor,
  usage,
} from "../src/index.js";
import { rid, shared, ws } from "./harness.js";

let meter: MeterClient;
before(() => {
  meter = new MeterClient({ target: shared().target });
});
after(() => meter.close());

describe("holds and charges", () => {
  test("grant, reserve and commit move available and held as the ledger says", async () => {
    const w = ws();
    const granted = await meter.grant(w, rid("pay"), { amount: 100 });
    assert.equal(granted.balance?.available, 100n);

    const hold = await meter.reserve(w, "job-1", "content.generate_post", { usage: { items: 3 } });
    assert.equal(hold.amount, 9n); // the catalog's maximum for 3 posts
    assert.equal(hold.state, HoldState.HELD);
    const during = await meter.balance(w);
    assert.deepEqual([91n, 9n], [during.available, during.held]);

    const done = await meter.commit(w, "job-1", { amount: 5 });
    assert.deepEqual([5n, 4n, 0n], [done.charged, done.released, done.shortfall]);
    const afterwards = await meter.balance(w);
    assert.deepEqual([95n, 0n, 5n], [afterwards.available, afterwards.held, afterwards.lifetimeUsed]);
  });

  test("a package grant is priced by the catalog", async () => {
    const w = ws();
    const granted = await meter.grant(w, rid("pay"), { package: "Basic" });
    assert.equal(granted.balance?.available, 250n);
    assert.equal(granted.lot?.package, "Basic");
  });

  test("a replayed reserve returns the same hold and holds once", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 50 });
    const first = await meter.reserve(w, "job-r", "strategy.analyze", { amount: 7 });
    const again = await meter.reserve(w, "job-r", "strategy.analyze", { amount: 7 });
    assert.equal(again.holdId, first.holdId);
    assert.equal((await meter.balance(w)).available, 43n);

    await meter.commit(w, "job-r", { amount: 7 });
    // Replayed after the commit: the committed hold, and still one charge.
    const late = await meter.reserve(w, "job-r", "strategy.analyze", { amount: 7 });
    assert.equal(late.holdId, first.holdId);
    assert.equal(late.state, HoldState.COMMITTED);
    const b = await meter.balance(w);
    assert.deepEqual([43n, 7n], [b.available, b.lifetimeUsed]);
  });

  test("a request id reused with other parameters is RequestIdReused and writes nothing", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 50 });
    await meter.reserve(w, "job-x", "strategy.analyze", { amount: 3 });

    const error = await meter.reserve(w, "job-x", "strategy.analyze", { amount: 4 }).catch((e: unknown) => e);
    assert.ok(error instanceof RequestIdReused, String(error));
    assert.ok(error instanceof InvalidArgument);
    assert.equal(error.reason, "REQUEST_ID_REUSED");
    assert.ok(error.fieldViolations.some((v) => v.field === "request_id"), JSON.stringify(error.fieldViolations));
    assert.equal(error.retryable, false);
    assert.equal((await meter.balance(w)).available, 47n);
  });

  test("insufficient credits is InsufficientCredits with the numbers, and nothing is held", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 30 });

    const error = await meter.reserve(w, rid(), "strategy.analyze", { amount: 200 }).catch((e: unknown) => e);
    assert.ok(error instanceof InsufficientCredits, String(error));
    assert.deepEqual(
      { required: 200, available: 30, shortfall: 170, suggestedPackage: "Basic" },
      {
        required: error.required,
        available: error.available,
        shortfall: error.shortfall,
        suggestedPackage: error.suggestedPackage,
      },
    );
    assert.equal(error.reason, "INSUFFICIENT_CREDITS");
    const b = await meter.balance(w);
    assert.deepEqual([30n, 0n], [b.available, b.held]);
  });

  test("bad input names each bad field", async () => {
    const error = await meter.reserve("", "no spaces", "strategy.analyze", { amount: 1 }).catch((e: unknown) => e);
    assert.ok(error instanceof InvalidArgument, String(error));
    const fields = error.fieldViolations.map((v) => v.field).sort();
    assert.deepEqual(["request_id", "workspace_id"], fields);
  });

  test("committing an unknown hold is NotFound (HOLD_NOT_FOUND)", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 5 });
    const error = await meter.commit(w, "never-reserved", { amount: 1 }).catch((e: unknown) => e);
    assert.ok(error instanceof NotFound, String(error));
    assert.equal(error.reason, "HOLD_NOT_FOUND");
  });

  test("charge reserves and commits at once", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 20 });
    const charged = await meter.charge(w, rid(), "content.generate_post", {
      usage: usage({ complexity: "simple" }),
      actor: "ana",
    });
    assert.ok(charged.charged > 0n);
    assert.equal(charged.balance?.available, 20n - charged.charged);
    const byActor = await meter.usage(w, "actor");
    assert.deepEqual(
      [["ana", charged.charged]],
      byActor.rows.map((r) => [r.key, r.credits]),
    );
  });
});

describe("job()", () => {
  test("commits the actual cost when the function succeeds", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 100 });
    const jobId = rid("job");
    const out = await meter.job(w, "content.generate_post", { jobId, usage: { items: 3 }, actor: "ben" }, async (j) => {
      assert.equal(j.requestId, `job:${jobId}`);
      assert.equal(j.hold.amount, 9n);
      assert.equal((await meter.balance(w)).held, 9n);
      j.actual = 4;
      return "posts";
    });
    assert.equal(out, "posts");
    const b = await meter.balance(w);
    assert.deepEqual([96n, 0n, 4n], [b.available, b.held, b.lifetimeUsed]);
    const page = await meter.transactions(w);
    assert.deepEqual(
      [`job:${jobId}`, -4n, "ben"],
      [page.entries[0]?.requestId, page.entries[0]?.amount, page.entries[0]?.actorId],
    );
  });

  test("commits what was held when the function sets no actual", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 100 });
    await meter.job(w, "strategy.analyze", { jobId: rid("job"), amount: 6 }, () => undefined);
    assert.equal((await meter.balance(w)).lifetimeUsed, 6n);
  });

  test("releases the hold and rethrows when the function throws", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 100 });
    const jobId = rid("job");
    const boom = new Error("the model fell over");
    await assert.rejects(
      meter.job(w, "content.generate_post", { jobId, usage: { items: 3 } }, async () => {
        throw boom;
      }),
      (e) => e === boom,
    );
    const b = await meter.balance(w);
    assert.deepEqual([100n, 0n, 0n], [b.available, b.held, b.lifetimeUsed]);
    const holds = await meter.holds(w);
    assert.deepEqual(
      [[requestIdFor(jobId), HoldState.RELEASED]],
      holds.holds.map((h) => [h.requestId, h.state]),
    );
  });

  test("a job id that is no valid request id gets the Python client's uuid5 id", async () => {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 10 });
    await meter.job(w, "strategy.analyze", { jobId: "job with spaces", amount: 2 }, (j) => {
      assert.equal(j.requestId, "job:fae33c2e-abd8-5039-a7bb-0159ae68f93a");
    });
  });
});
