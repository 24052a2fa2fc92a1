/**
 * Retries: the policy against an in-memory Connect router that fails on cue, then one
 * end-to-end case against a real server that starts only after the call did.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { ErrorInfoSchema, RetryInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import {
  type Hold,
  HoldSchema,
  InsufficientCredits,
  Meter,
  MeterClient,
  type RetryEvent,
  Unavailable,
  backoffMs,
  retryPolicy,
} from "../src/index.js";
import { freePort, rid, serve, shared, ws } from "./harness.js";

/** A MeterClient over a router whose Reserve fails with `failures` in turn, then answers. */
function fake(failures: (() => never)[], policy: Parameters<typeof retryPolicy>[0] = {}) {
  const seen: string[] = [];
  const events: RetryEvent[] = [];
  const transport = createRouterTransport(({ service }) => {
    service(Meter, {
      async reserve(req) {
        seen.push(req.requestId);
        const fail = failures[seen.length - 1];
        if (fail !== undefined) fail();
        return { hold: create(HoldSchema, { holdId: "h-1", requestId: req.requestId, amount: 3n }) };
      },
    });
  });
  const meter = new MeterClient({
    transport,
    retry: { initialBackoffMs: 1, maxBackoffMs: 5, onRetry: (e) => events.push(e), ...policy },
  });
  return { meter, seen, events };
}

const unavailable = (): never => {
  throw new ConnectError("database unreachable", Code.Unavailable);
};

describe("the retry policy", () => {
  test("UNAVAILABLE is retried with the same request id until it answers", async () => {
    const { meter, seen, events } = fake([unavailable, unavailable]);
    const hold: Hold = await meter.reserve("ws-1", "job-7", "op", { amount: 3 });
    assert.equal(hold.holdId, "h-1");
    assert.deepEqual(["job-7", "job-7", "job-7"], seen);
    assert.deepEqual([1, 2], events.map((e) => e.attempt));
    assert.ok(events.every((e) => e.error instanceof Unavailable));
  });

  test("each retryable code is retried; a refusal is not", async () => {
    for (const code of [Code.DeadlineExceeded, Code.Aborted, Code.ResourceExhausted]) {
      const { meter, seen } = fake([
        () => {
          throw new ConnectError("again", code);
        },
      ]);
      await meter.reserve("ws-1", "job-8", "op", { amount: 3 });
      assert.equal(seen.length, 2, `code ${Code[code]}`);
    }
    const refusal = (): never => {
      throw new ConnectError("not enough", Code.FailedPrecondition, undefined, [
        {
          desc: ErrorInfoSchema,
          value: { domain: "meter", reason: "INSUFFICIENT_CREDITS", metadata: { required: "9", available: "2", shortfall: "7" } },
        },
      ]);
    };
    const { meter, seen } = fake([refusal]);
    const error = await meter.reserve("ws-1", "job-9", "op", { amount: 9 }).catch((e: unknown) => e);
    assert.ok(error instanceof InsufficientCredits, String(error));
    assert.deepEqual([9, 2, 7], [error.required, error.available, error.shortfall]);
    assert.equal(seen.length, 1);
  });

  test("a server's RetryInfo delay is a floor under the backoff", async () => {
    const busy = (): never => {
      throw new ConnectError("busy", Code.ResourceExhausted, undefined, [
        { desc: RetryInfoSchema, value: { retryDelay: { seconds: 0n, nanos: 250_000_000 } } },
      ]);
    };
    const { meter, events } = fake([busy]);
    const started = performance.now();
    await meter.reserve("ws-1", "job-10", "op", { amount: 3 });
    assert.equal(events[0]?.error.retryDelayMs, 250);
    assert.ok((events[0]?.delayMs ?? 0) >= 250);
    assert.ok(performance.now() - started >= 245, "slept the server's delay");
  });

  test("the last error is thrown when the attempts run out", async () => {
    const { meter, seen } = fake(Array(10).fill(unavailable) as (() => never)[], { maxAttempts: 3 });
    await assert.rejects(meter.reserve("ws-1", "job-11", "op", { amount: 3 }), Unavailable);
    assert.equal(seen.length, 3);
  });

  test("an attempt that outlives its deadline is retried", async () => {
    let calls = 0;
    const transport = createRouterTransport(({ service }) => {
      service(Meter, {
        async reserve(req, ctx) {
          calls += 1;
          if (calls === 1) {
            // Hangs until the client's per-attempt deadline cancels it.
            await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
          }
          return { hold: create(HoldSchema, { requestId: req.requestId }) };
        },
      });
    });
    const meter = new MeterClient({ transport, retry: { attemptTimeoutMs: 100, initialBackoffMs: 1 } });
    const hold = await meter.reserve("ws-1", "job-12", "op", { amount: 1 });
    assert.deepEqual(["job-12", 2], [hold.requestId, calls]);
  });

  test("full jitter: the backoff is drawn from [0, cap], the cap doubling to its maximum", () => {
    const policy = (r: number) => retryPolicy({ initialBackoffMs: 100, maxBackoffMs: 1000, random: () => r });
    const error = new Unavailable(Code.Unavailable, "down");
    assert.deepEqual([0, 50, 100, 200, 400, 500], [
      backoffMs(policy(0), 3, error),
      backoffMs(policy(0.5), 1, error),
      backoffMs(policy(0.5), 2, error),
      backoffMs(policy(0.5), 3, error),
      backoffMs(policy(0.5), 4, error),
      backoffMs(policy(0.5), 9, error), // capped at maxBackoffMs
    ]);
  });
});

describe("retries against a real server", () => {
  test("a reserve sent before the server is up is retried with its request id and holds once", async () => {
    const { db, target } = shared();
    const w = ws();
    const grants = new MeterClient({ target });
    await grants.grant(w, rid("pay"), { amount: 40 });

    const port = await freePort();
    const sent: string[] = [];
    const events: RetryEvent[] = [];
    const meter = new MeterClient({
      target: `127.0.0.1:${port}`,
      retry: { maxAttempts: 200, initialBackoffMs: 20, maxBackoffMs: 200, budgetMs: 45_000, onRetry: (e) => events.push(e) },
      interceptors: [
        (next) => (req) => {
          if (!req.stream) sent.push((req.message as { requestId?: string }).requestId ?? "");
          return next(req);
        },
      ],
    });
    const server = { current: undefined as Awaited<ReturnType<typeof serve>> | undefined };
    try {
      const reserving = meter.reserve(w, "job-early", "strategy.analyze", { amount: 6 });
      // The server starts once the client has seen it unreachable.
      while (events.length === 0) await new Promise((r) => setTimeout(r, 10));
      server.current = await serve(db, { port, noWait: true });
      const hold = await reserving;

      assert.equal(hold.amount, 6n);
      assert.ok(sent.length >= 2, `attempts: ${sent.length}`);
      assert.ok(sent.every((id) => id === "job-early"));
      assert.ok(events.some((e) => e.error instanceof Unavailable));
      // Replayed once more, through the running server: still the one hold.
      assert.equal((await meter.reserve(w, "job-early", "strategy.analyze", { amount: 6 })).holdId, hold.holdId);
      const b = await grants.balance(w);
      assert.deepEqual([34n, 6n], [b.available, b.held]);
    } finally {
      meter.close();
      grants.close();
      await server.current?.stop();
    }
  });
});

describe("stream sessions' retries", () => {
  test("items of a stream that breaks are sent again, with their request ids, on a new stream", async () => {
    let streams = 0;
    const seen: string[][] = [];
    const transport = createRouterTransport(({ service }) => {
      service(Meter, {
        async *stream(requests) {
          streams += 1;
          for await (const message of requests) {
            seen.push(message.items.map((i) => i.item.value?.requestId ?? ""));
            if (streams === 1) throw new ConnectError("the replica went away", Code.Unavailable);
            yield {
              results: message.items.map((i) => ({
                workspaceId: i.item.value?.workspaceId ?? "",
                requestId: i.item.value?.requestId ?? "",
                status: { code: 0 },
                result: { case: "hold" as const, value: { requestId: i.item.value?.requestId ?? "" } },
              })),
            };
          }
        },
      });
    });
    const meter = new MeterClient({ transport, retry: { initialBackoffMs: 1, maxBackoffMs: 5 } });
    const session = meter.stream();
    const holds = await Promise.all(["a", "b", "c"].map((id) => session.reserve("ws-1", id, "op", { amount: 1 })));
    await session.close();

    assert.deepEqual(["a", "b", "c"], holds.map((h) => h.requestId));
    assert.equal(streams, 2);
    // First all three in one message on the broken stream, then again on the new one.
    assert.deepEqual(["a", "b", "c"], seen[0]);
    assert.deepEqual(["a", "b", "c"], seen.slice(1).flat().sort());
  });
});
