/**
 * W3C trace context on every call, when the application uses OpenTelemetry.
 *
 * `@opentelemetry/api` is an optional peer dependency. When it can be loaded, an interceptor
 * injects the active context's `traceparent` / `tracestate` (whatever propagator the
 * application registered) into each call's metadata, so the server's spans continue the
 * caller's trace. Without it, or without a registered propagator, nothing is added and
 * nothing is paid.
 */

import { createRequire } from "node:module";
import type { Interceptor } from "@connectrpc/connect";

type OtelApi = typeof import("@opentelemetry/api");

// Loaded synchronously (the client's constructor is), through require: the API keeps its
// globals (propagator, context manager) on globalThis under a versioned symbol, so this copy
// sees what the application registered through its own `import`.
function loadOtel(): OtelApi | undefined {
  try {
    return createRequire(import.meta.url)("@opentelemetry/api") as OtelApi;
  } catch {
    return undefined;
  }
}

/** The interceptor that propagates trace context, or undefined without OpenTelemetry. */
export function traceContextInterceptor(api: OtelApi | undefined = loadOtel()): Interceptor | undefined {
  if (api === undefined) return undefined;
  const setter = {
    set(carrier: Headers, key: string, value: string): void {
      carrier.set(key, value);
    },
  };
  return (next) => (req) => {
    api.propagation.inject(api.context.active(), req.header, setter);
    return next(req);
  };
}
