/** Stream sessions: many concurrent jobs' calls batched over one Meter.Stream. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { InsufficientCredits, MeterClient } from "../src/index.js";
import { rid, shared, ws } from "./harness.js";

test("200 concurrent jobs reserve and commit through one session, batched, each charged once", async () => {
  const meter = new MeterClient({ target: shared().target });
  const workspaces = [ws(), ws(), ws(), ws()];
  await Promise.all(workspaces.map((w) => meter.grant(w, rid("pay"), { amount: 1000 })));
  const session = meter.stream();
  try {
    const jobs = Array.from({ length: 200 }, (_, i) => ({ w: workspaces[i % 4] ?? "", id: `job-${i}` }));
    const charged = await Promise.all(
      jobs.map(async ({ w, id }) => {
        const hold = await session.reserve(w, id, "strategy.analyze", { amount: 5 });
        assert.equal(hold.requestId, id);
        const done = await session.commit(w, id, { amount: 3 });
        return [done.charged, done.released];
      }),
    );
    assert.ok(charged.every(([c, r]) => c === 3n && r === 2n));
    assert.equal(session.itemsSent, 400);
    assert.ok(session.messagesSent < 100, `messages: ${session.messagesSent}`);
    // A replayed commit is answered from the ledger, not charged again.
    const again = await session.commit(workspaces[0] ?? "", "job-0", { amount: 3 });
    assert.equal(again.charged, 3n);
  } finally {
    await session.close();
  }
  const balances = await Promise.all(workspaces.map((w) => meter.balance(w)));
  assert.deepEqual(
    workspaces.map(() => [1000n - 50n * 3n, 0n]),
    balances.map((b) => [b.available, b.held]),
  );
  meter.close();
});

test("a refused item throws its typed error and the stream goes on", async () => {
  const meter = new MeterClient({ target: shared().target });
  const w = ws();
  await meter.grant(w, rid("pay"), { amount: 10 });
  const session = meter.stream();
  try {
    const [refused, ok] = await Promise.allSettled([
      session.reserve(w, "big", "strategy.analyze", { amount: 50 }),
      session.charge(w, "small", "strategy.analyze", { amount: 4 }),
    ]);
    assert.equal(refused.status, "rejected");
    assert.ok(refused.reason instanceof InsufficientCredits, String(refused.reason));
    assert.deepEqual([50, 10, 40], [refused.reason.required, refused.reason.available, refused.reason.shortfall]);
    assert.equal(ok.status === "fulfilled" && ok.value.charged, 4n);
    const released = await session.release(w, (await session.reserve(w, "r", "strategy.analyze", { amount: 2 })).requestId);
    assert.equal(released.requestId, "r");
  } finally {
    await session.close();
    meter.close();
  }
});
