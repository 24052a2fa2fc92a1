/**
 * StreamSession: many concurrent ledger calls packed into batches over one `Meter.Stream`.
 *
 * A worker's async functions each `await session.reserve(...)` / `commit(...)` as if the
 * calls were unary; the session sends whatever is queued as one StreamRequest, and hands each
 * caller its own result (results come back in any order and grouping, matched by workspace
 * and request id) or throws the same typed error as the unary call would.
 *
 * Calls for the same (workspace, request id) are sent one after the other, never together: a
 * job's Commit must not overtake its Reserve, and it keeps the matching unambiguous.
 */

import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  type ChargeResponse,
  type CommitResponse,
  type Hold,
  type Meter,
  ReleaseRequestSchema,
  type StreamItem,
  StreamItemSchema,
  type StreamRequest,
  StreamRequestSchema,
  type StreamResult,
} from "./gen/meterpb/v1/meter_pb.js";
import { Code, DeadlineExceeded, Internal, type MeterError, Unavailable, fromConnectError, fromStatus } from "./errors.js";
import {
  type CommitOptions,
  type OperationOptions,
  type ReserveOptions,
  chargeRequest,
  commitRequest,
  extendRequest,
  reserveRequest,
} from "./requests.js";
import { type RetryPolicy, withRetries } from "./retry.js";

type Kind = NonNullable<StreamItem["item"]["case"]>;
// Which case of StreamResult.result carries each kind's answer.
const RESULT_CASE: Record<Kind, StreamResult["result"]["case"]> = {
  reserve: "hold",
  release: "hold",
  extend: "hold",
  commit: "commit",
  charge: "charge",
};

export interface StreamSessionOptions {
  /** At most this many items per StreamRequest (default 500). */
  maxBatch?: number | undefined;
  /** Changes to the client's retry policy for this session's items. */
  retry?: Partial<RetryPolicy> | undefined;
}

/** The items waiting to be sent on one stream, handed to Connect as the request stream. */
class Outbox {
  private items: StreamItem[] = [];
  private closed = false;
  private wake: (() => void) | undefined;

  push(item: StreamItem): void {
    this.items.push(item);
    this.wake?.();
  }

  close(): void {
    this.closed = true;
    this.wake?.();
  }

  async *messages(maxBatch: number, sent: (items: number) => void): AsyncGenerator<StreamRequest> {
    for (;;) {
      while (this.items.length === 0 && !this.closed) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
      }
      if (this.items.length === 0) return; // closed, and everything sent
      // One turn of the event loop, so that every caller of this moment rides in the message.
      await new Promise((resolve) => setImmediate(resolve));
      const batch = this.items.splice(0, maxBatch);
      sent(batch.length);
      yield create(StreamRequestSchema, { items: batch });
    }
  }
}

/** One Meter.Stream call: its outbox, and the loop that reads its answers. */
interface Line {
  readonly outbox: Outbox;
  done: Promise<void>;
  ended: boolean;
}

interface Pending {
  readonly kind: Kind;
  readonly line: Line;
  readonly resolve: (result: StreamResult) => void;
  readonly reject: (error: MeterError) => void;
  /** Settles (never rejects) when the item is answered or its stream ends. */
  readonly settled: Promise<void>;
}

/**
 * Batches concurrent Reserve/Commit/Release/Extend/Charge calls over one stream. Get one with
 * `client.stream()`; `close()` it when done. If the stream breaks, the calls in flight fail
 * with `Unavailable` and are retried with the same request id, per the retry policy, over a
 * new stream.
 */
export class StreamSession {
  /** StreamRequest messages and items sent so far (how well calls were batched). */
  messagesSent = 0;
  itemsSent = 0;

  private readonly pending = new Map<string, Pending>();
  private line: Line | undefined;
  private closed = false;
  private readonly maxBatch: number;
  private readonly retry: RetryPolicy;

  constructor(
    private readonly meter: Client<typeof Meter>,
    retry: RetryPolicy,
    options: StreamSessionOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 500;
    this.retry = { ...retry, ...options.retry };
  }

  /** As `MeterClient.reserve`, batched. */
  async reserve(
    workspaceId: string,
    requestId: string,
    operation: string,
    options: ReserveOptions = {},
  ): Promise<Hold> {
    const reserve = reserveRequest(workspaceId, requestId, operation, options);
    const result = await this.submit({ case: "reserve", value: reserve }, options.waitForFundsMs);
    return hold(result);
  }

  /** As `MeterClient.commit`, batched. */
  async commit(workspaceId: string, requestId: string, options: CommitOptions = {}): Promise<CommitResponse> {
    const result = await this.submit({ case: "commit", value: commitRequest(workspaceId, requestId, options) });
    if (result.result.case !== "commit") throw missing(result);
    return result.result.value;
  }

  /** As `MeterClient.release`, batched; resolves to the released hold. */
  async release(workspaceId: string, requestId: string): Promise<Hold> {
    const release = create(ReleaseRequestSchema, { workspaceId, requestId });
    return hold(await this.submit({ case: "release", value: release }));
  }

  /** As `MeterClient.extend`, batched. */
  async extend(workspaceId: string, requestId: string, options: { ttlMs?: number } = {}): Promise<Hold> {
    const extend = extendRequest(workspaceId, requestId, options.ttlMs);
    return hold(await this.submit({ case: "extend", value: extend }));
  }

  /** As `MeterClient.charge`, batched. */
  async charge(
    workspaceId: string,
    requestId: string,
    operation: string,
    options: OperationOptions = {},
  ): Promise<ChargeResponse> {
    const charge = chargeRequest(workspaceId, requestId, operation, options);
    const result = await this.submit({ case: "charge", value: charge });
    if (result.result.case !== "charge") throw missing(result);
    return result.result.value;
  }

  /** Finish the stream once every item sent has its answer; later calls throw. */
  async close(): Promise<void> {
    this.closed = true;
    const line = this.line;
    if (line === undefined) return;
    line.outbox.close();
    await line.done;
  }

  // The machinery.

  private submit(item: StreamItem["item"], waitForFundsMs?: number): Promise<StreamResult> {
    const message = create(StreamItemSchema, { item });
    const kind = item.case as Kind;
    return withRetries(this.retry, kind, (timeoutMs) => this.once(kind, message, timeoutMs), {
      extraMs: waitForFundsMs ?? 0,
    });
  }

  private async once(kind: Kind, item: StreamItem, timeoutMs: number): Promise<StreamResult> {
    if (this.closed) throw new Error("the stream session is closed");
    const request = item.item.value;
    if (request === undefined) throw new TypeError("an empty stream item");
    const key = `${request.workspaceId}\u0000${request.requestId}`;
    // One item per key in flight: wait for the earlier one's answer, whatever it is.
    for (let earlier = this.pending.get(key); earlier !== undefined; earlier = this.pending.get(key)) {
      await earlier.settled;
    }
    const line = this.current();
    let resolve!: (r: StreamResult) => void;
    let reject!: (e: MeterError) => void;
    const answer = new Promise<StreamResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const settled = answer.then(
      () => undefined,
      () => undefined, // also marks the rejection handled: a late one may find nobody waiting
    );
    this.pending.set(key, { kind, line, resolve, reject, settled });
    line.outbox.push(item);

    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, rej) => {
      timer = setTimeout(() => {
        const what = `no answer to ${kind} ${JSON.stringify(request.requestId)} within ${timeoutMs} ms`;
        rej(new DeadlineExceeded(Code.DeadlineExceeded, what));
      }, timeoutMs);
    });
    try {
      // The pending entry outlives a deadline: a late answer still frees the key.
      const result = await Promise.race([answer, deadline]);
      if (result.status !== undefined && result.status.code !== 0) throw fromStatus(result.status);
      return result;
    } finally {
      clearTimeout(timer);
    }
  }

  private current(): Line {
    if (this.line !== undefined && !this.line.ended) return this.line;
    const outbox = new Outbox();
    const line: Line = { outbox, done: Promise.resolve(), ended: false };
    const requests = outbox.messages(this.maxBatch, (items) => {
      this.messagesSent += 1;
      this.itemsSent += items;
    });
    line.done = this.receive(line, this.meter.stream(requests));
    this.line = line;
    return line;
  }

  private async receive(line: Line, responses: AsyncIterable<{ results: StreamResult[] }>): Promise<void> {
    let failure: MeterError | undefined;
    try {
      for await (const response of responses) {
        for (const result of response.results) this.resolve(result);
      }
    } catch (e) {
      failure = fromConnectError(e);
    } finally {
      line.ended = true;
      line.outbox.close();
      // Whatever is still unanswered will not be answered on this stream.
      const why = failure ?? new Unavailable(Code.Unavailable, "the stream ended before answering");
      for (const [key, p] of this.pending) {
        if (p.line === line) {
          this.pending.delete(key);
          p.reject(why);
        }
      }
    }
  }

  private resolve(result: StreamResult): void {
    const key = `${result.workspaceId}\u0000${result.requestId}`;
    const pending = this.pending.get(key);
    if (pending === undefined) return; // an answer to an item this session no longer waits for
    this.pending.delete(key);
    const carried = result.result.case;
    if (carried !== undefined && carried !== RESULT_CASE[pending.kind]) {
      const what = `a ${carried} result answered a ${pending.kind} item of ${JSON.stringify(result.requestId)}`;
      pending.reject(new Internal(Code.Internal, what));
      return;
    }
    pending.resolve(result);
  }
}

function missing(result: StreamResult): MeterError {
  return new Internal(Code.Internal, `the result of ${JSON.stringify(result.requestId)} carried nothing`);
}

function hold(result: StreamResult): Hold {
  if (result.result.case !== "hold") throw missing(result);
  return result.result.value;
}
