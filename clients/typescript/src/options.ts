/**
 * Where the client connects and how: target, token, TLS, the retry policy, and the Connect
 * transport (gRPC over HTTP/2, Node's http2 module) built from them.
 */

import { readFileSync } from "node:fs";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { type RetryPolicy, retryPolicy } from "./retry.js";
import { traceContextInterceptor } from "./trace.js";

export const DEFAULT_TARGET = "127.0.0.1:50051";

/** PEM contents, or `{ path }` to read them from a file when the client is made. */
export type Pem = string | Uint8Array | { readonly path: string };

/**
 * TLS for the connection; with a client certificate and key, mutual TLS. Without a CA the
 * system's roots are used.
 */
export interface TlsOptions {
  readonly ca?: Pem | undefined;
  readonly cert?: Pem | undefined;
  readonly key?: Pem | undefined;
  /** The name to verify the server's certificate against, when not the target's host. */
  readonly serverName?: string | undefined;
}

export interface MeterClientOptions {
  /** HOST:PORT (or an http:// or https:// URL); default METER_TARGET or 127.0.0.1:50051. */
  readonly target?: string | undefined;
  /** Sent as `authorization: Bearer <token>`; default METER_TOKEN. */
  readonly token?: string | undefined;
  /** TLS settings (`true`: TLS with the system's roots); none for plaintext (loopback, tests). */
  readonly tls?: TlsOptions | boolean | undefined;
  /** Changes to the default retry policy of every call. */
  readonly retry?: Partial<RetryPolicy> | undefined;
  /** More Connect interceptors, run inside the client's own (token, trace context). */
  readonly interceptors?: readonly Interceptor[] | undefined;
  /**
   * A transport of your own (a test's in-memory router, say): target, token, TLS and the
   * interceptors are then the transport's business.
   */
  readonly transport?: Transport | undefined;
}

export interface Connection {
  readonly target: string;
  readonly transport: Transport;
  readonly retry: RetryPolicy;
  /** Closes the HTTP/2 connection (none for a transport given in the options). */
  readonly close: () => void;
}

function pem(value: Pem | undefined): string | Buffer | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string") return value;
  if (value instanceof Uint8Array) return Buffer.from(value);
  return readFileSync(value.path);
}

/** The base URL of a target: HOST:PORT over http (https with TLS), or a URL as it is. */
export function baseUrl(target: string, tls: boolean): string {
  if (/^https?:\/\//.test(target)) return target;
  return `${tls ? "https" : "http"}://${target}`;
}

export function connect(options: MeterClientOptions = {}): Connection {
  const target = options.target || process.env["METER_TARGET"] || DEFAULT_TARGET;
  const token = options.token ?? (process.env["METER_TOKEN"] || undefined);
  const retry = retryPolicy(options.retry);

  const interceptors: Interceptor[] = [];
  if (token) {
    const bearer = `Bearer ${token}`;
    interceptors.push((next) => (req) => {
      req.header.set("authorization", bearer);
      return next(req);
    });
  }
  const trace = traceContextInterceptor();
  if (trace !== undefined) interceptors.push(trace);
  interceptors.push(...(options.interceptors ?? []));

  if (options.transport !== undefined) {
    return { target, transport: options.transport, retry, close: () => {} };
  }
  const tls = options.tls === true ? {} : options.tls || undefined;
  const url = baseUrl(target, tls !== undefined);
  const nodeOptions =
    tls === undefined
      ? {}
      : {
          ca: pem(tls.ca),
          cert: pem(tls.cert),
          key: pem(tls.key),
          ...(tls.serverName === undefined ? {} : { servername: tls.serverName }),
        };
  // One HTTP/2 connection of our own, so that close() can end it; it reconnects by itself
  // after a failure (a restarted server), and pings keep an idle one honest.
  const sessionManager = new Http2SessionManager(url, { pingIntervalMs: 30_000 }, nodeOptions);
  const transport = createGrpcTransport({ baseUrl: url, sessionManager, interceptors });
  return { target, transport, retry, close: () => sessionManager.abort() };
}
