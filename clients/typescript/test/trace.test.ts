/**
 * Trace context: with @opentelemetry/api present and a W3C propagator registered, every call
 * carries the active context's traceparent and tracestate. The server does not read them yet,
 * so the test records what left the client (an interceptor inside the client's own) on calls
 * that a real server answered.
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { ROOT_CONTEXT, TraceFlags, context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator, TraceState } from "@opentelemetry/core";
import { MeterClient } from "../src/index.js";
import { rid, shared, ws } from "./harness.js";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID = "00f067aa0ba902b7";

let manager: AsyncLocalStorageContextManager;
before(() => {
  manager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(manager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
});
after(() => {
  propagation.disable();
  context.disable();
});

function recording(): { headers: Headers[]; meter: MeterClient } {
  const headers: Headers[] = [];
  const meter = new MeterClient({
    target: shared().target,
    interceptors: [
      (next) => (req) => {
        headers.push(new Headers(req.header));
        return next(req);
      },
    ],
  });
  return { headers, meter };
}

test("a call inside a span carries its traceparent and tracestate", async () => {
  const { headers, meter } = recording();
  const span = trace.wrapSpanContext({
    traceId: TRACE_ID,
    spanId: SPAN_ID,
    traceFlags: TraceFlags.SAMPLED,
    isRemote: false,
    traceState: new TraceState("meter=ts"),
  });
  const w = ws();
  try {
    await context.with(trace.setSpan(ROOT_CONTEXT, span), async () => {
      await meter.grant(w, rid("pay"), { amount: 5 });
      // After an await, still the same context (AsyncLocalStorage carries it).
      assert.equal((await meter.balance(w)).available, 5n);
    });
  } finally {
    meter.close();
  }
  assert.equal(headers.length, 2);
  for (const h of headers) {
    assert.equal(h.get("traceparent"), `00-${TRACE_ID}-${SPAN_ID}-01`);
    assert.equal(h.get("tracestate"), "meter=ts");
  }
});

test("a call outside any span carries no trace context", async () => {
  const { headers, meter } = recording();
  try {
    assert.ok((await meter.packages()).packages.length > 0);
  } finally {
    meter.close();
  }
  assert.equal(headers.length, 1);
  assert.equal(headers[0]?.get("traceparent"), null);
});
