/** watchBalance: the balance now, then a message after every change. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { MeterClient, type WatchBalanceResponse } from "../src/index.js";
import { rid, shared, ws } from "./harness.js";

test("watchBalance yields the balance now, then the balance after a grant", async () => {
  const meter = new MeterClient({ target: shared().target });
  const w = ws();
  await meter.grant(w, rid("pay"), { amount: 10 });
  const stop = AbortSignal.timeout(15_000);
  const seen: WatchBalanceResponse[] = [];
  try {
    for await (const message of meter.watchBalance(w, { signal: stop })) {
      seen.push(message);
      if (seen.length === 1) {
        assert.equal(message.event.case, "balance");
        assert.equal(message.event.value?.available, 10n);
        await meter.grant(w, rid("pay"), { amount: 25 });
        continue;
      }
      if (message.event.case === "balance" && message.event.value.available === 35n) break;
    }
  } finally {
    meter.close();
  }
  const last = seen.at(-1);
  assert.equal(last?.event.case, "balance");
  assert.equal(last.event.value.available, 35n);
});

test("watchBalance ends the call when the loop stops, and the client goes on", async () => {
  const meter = new MeterClient({ target: shared().target });
  const w = ws();
  await meter.grant(w, rid("pay"), { amount: 3 });
  try {
    for await (const message of meter.watchBalance(w)) {
      assert.equal(message.event.case, "balance");
      break;
    }
    assert.equal((await meter.balance(w)).available, 3n);
  } finally {
    meter.close();
  }
});
