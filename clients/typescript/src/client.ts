/**
 * MeterClient: the calls a worker, the payment handler and a web app's backend make, with
 * retries under the same request id and typed errors.
 */

import { create } from "@bufbuild/protobuf";
import { type CallOptions, type Client, createClient } from "@connectrpc/connect";
import { Catalog, type ListPackagesResponse } from "./gen/meterpb/v1/catalog_pb.js";
import {
  type AlertThresholds,
  type Balance,
  type Budget,
  type ChargeResponse,
  type CommitResponse,
  type EntryKind,
  GrantCreditsRequestSchema,
  type GrantCreditsResponse,
  type GetUsageResponse,
  type Hold,
  type HoldState,
  type ListHoldsResponse,
  type ListTransactionsResponse,
  Meter,
  type ReleaseResponse,
  SetAlertThresholdsRequestSchema,
  UsageGrouping,
  type WatchBalanceResponse,
} from "./gen/meterpb/v1/meter_pb.js";
import { Events } from "./gen/meterpb/v1/events_pb.js";
import { type MeterError, fromConnectError } from "./errors.js";
import { requestIdFor } from "./ids.js";
import { Job, type JobOptions } from "./job.js";
import { type Connection, type MeterClientOptions, connect } from "./options.js";
import {
  type BudgetInit,
  type CommitOptions,
  type Credits,
  type Labels,
  type OperationOptions,
  type ReserveOptions,
  chargeRequest,
  commitRequest,
  credits,
  extendRequest,
  reserveRequest,
  setBudgetRequest,
  timestamp,
} from "./requests.js";
import { type RetryPolicy, withRetries } from "./retry.js";
import { StreamSession, type StreamSessionOptions } from "./stream.js";

/** Per call: its own deadline for every attempt (instead of the policy's), and cancellation. */
export interface CallControl {
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export type GrantWhat = { amount: Credits; package?: never } | { package: string; amount?: never };

export interface GrantOptions extends CallControl {
  expiresAt?: Date | undefined;
  /** purchase, promotion, manual, ... */
  source?: string | undefined;
  actor?: string | undefined;
  labels?: Labels | undefined;
  /** 0-100, lower burns first (default 50). */
  priority?: number | undefined;
  /** Record the lot now, spendable only after ConfirmGrant (a payment still processing). */
  pending?: boolean | undefined;
}

export interface TransactionsOptions extends CallControl {
  kinds?: readonly EntryKind[] | undefined;
  operations?: readonly string[] | undefined;
  actor?: string | undefined;
  since?: Date | undefined;
  until?: Date | undefined;
  pageSize?: number | undefined;
  pageToken?: string | undefined;
}

const GROUPING = {
  operation: UsageGrouping.OPERATION,
  actor: UsageGrouping.ACTOR,
  day: UsageGrouping.DAY,
  week: UsageGrouping.WEEK,
  label: UsageGrouping.LABEL,
} as const;

export interface UsageOptions extends CallControl {
  /** By "label": the label key whose values are the rows (project, team, api_key, ...). */
  labelKey?: string | undefined;
  since?: Date | undefined;
  until?: Date | undefined;
}

export interface AlertThresholdsInit {
  /** LOW below this many available credits. */
  low: Credits;
  /** CRITICAL below this many available credits (at most `low`). */
  critical: Credits;
  /** balance.runway_low when the credits would run out within this many days (0: never;
   * omitted: as it is, 7 by default). */
  runwayDays?: number | undefined;
}

/**
 * A Meter client over one HTTP/2 connection (gRPC, through Connect's Node transport).
 *
 * Every unary call is retried on UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED and
 * RESOURCE_EXHAUSTED with the same request, so the same request id: a call whose answer was
 * lost is answered on retry with the first answer, and charged once. Failures throw typed
 * `MeterError`s (`InsufficientCredits`, `RequestIdReused`, `HoldNotFound`, ...).
 */
export class MeterClient {
  readonly target: string;
  readonly retry: RetryPolicy;
  /** The generated Connect clients, for calls this class does not wrap (no retries). */
  readonly raw: {
    readonly meter: Client<typeof Meter>;
    readonly catalog: Client<typeof Catalog>;
    readonly events: Client<typeof Events>;
  };
  private readonly connection: Connection;

  constructor(options: MeterClientOptions = {}) {
    this.connection = connect(options);
    this.target = this.connection.target;
    this.retry = this.connection.retry;
    const t = this.connection.transport;
    this.raw = {
      meter: createClient(Meter, t),
      catalog: createClient(Catalog, t),
      events: createClient(Events, t),
    };
  }

  /** Close the connection; calls in flight fail. */
  close(): void {
    this.connection.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // Holds and charges.

  /**
   * Hold the maximum cost of `operation` for `usage` (or an explicit `amount`).
   *
   * @throws InsufficientCredits (required, available, shortfall, suggestedPackage): nothing held.
   * @throws RequestIdReused the request id was used with other parameters.
   * @throws OperationNotFound, MemberLimitReached, InvalidArgument, Unavailable, ...
   */
  async reserve(
    workspaceId: string,
    requestId: string,
    operation: string,
    options: ReserveOptions & CallControl = {},
  ): Promise<Hold> {
    const request = reserveRequest(workspaceId, requestId, operation, options);
    const extraMs = options.waitForFundsMs ?? 0;
    const answer = await this.call("Reserve", options, (o) => this.raw.meter.reserve(request, o), extraMs);
    return answer.hold ?? missing("Reserve");
  }

  /**
   * Charge the actual cost (`amount`, or `usage` priced with the hold's catalog version) of the
   * job held under `requestId`, and return the rest.
   *
   * @throws HoldReleased, HoldNotFound, ...
   */
  commit(workspaceId: string, requestId: string, options: CommitOptions & CallControl = {}): Promise<CommitResponse> {
    const request = commitRequest(workspaceId, requestId, options);
    return this.call("Commit", options, (o) => this.raw.meter.commit(request, o));
  }

  /**
   * Give a held amount back in full (the job failed or was cancelled).
   *
   * @throws HoldCommitted, HoldNotFound, ...
   */
  release(workspaceId: string, requestId: string, options: CallControl = {}): Promise<ReleaseResponse> {
    return this.call("Release", options, (o) => this.raw.meter.release({ workspaceId, requestId }, o));
  }

  /**
   * Make a held hold expire `ttlMs` from now (long jobs heartbeat with it).
   *
   * @throws HoldReleased, HoldCommitted, HoldExpired, HoldNotFound.
   */
  async extend(
    workspaceId: string,
    requestId: string,
    options: { ttlMs?: number | undefined } & CallControl = {},
  ): Promise<Hold> {
    const request = extendRequest(workspaceId, requestId, options.ttlMs);
    const answer = await this.call("Extend", options, (o) => this.raw.meter.extend(request, o));
    return answer.hold ?? missing("Extend");
  }

  /** Reserve and commit in one call, for instant operations. */
  charge(
    workspaceId: string,
    requestId: string,
    operation: string,
    options: OperationOptions & CallControl = {},
  ): Promise<ChargeResponse> {
    const request = chargeRequest(workspaceId, requestId, operation, options);
    return this.call("Charge", options, (o) => this.raw.meter.charge(request, o));
  }

  /**
   * Reserve, run `fn`, then commit its actual cost (`job.actual`, or `job.usage`; neither:
   * what was held for); release if `fn` throws, and rethrow. Resolves to what `fn` returned.
   *
   * The request id is `requestIdFor(jobId)` (`job:<jobId>`), as the Python client makes it:
   * a re-queued job, in either language, finds its hold again. If the release fails too, the
   * error of `fn` is still the one thrown (with `releaseError` set on it when it is an
   * Error); the hold then expires by itself at its ttl.
   */
  async job<T>(
    workspaceId: string,
    operation: string,
    options: JobOptions,
    fn: (job: Job) => Promise<T> | T,
  ): Promise<T> {
    const requestId = pickRequestId(options);
    const hold = await this.reserve(workspaceId, requestId, operation, options);
    const job = new Job(this, workspaceId, requestId, hold, options.usage, options.ttlMs);
    let value: T;
    try {
      value = await fn(job);
    } catch (failure) {
      try {
        await this.release(workspaceId, requestId);
      } catch (e) {
        if (failure instanceof Error) Object.assign(failure, { releaseError: e });
      }
      throw failure;
    }
    job.result = await this.commit(workspaceId, requestId, job.commitOptions());
    return value;
  }

  /** A batching session over one `Meter.Stream`, for many concurrent jobs. */
  stream(options: StreamSessionOptions = {}): StreamSession {
    return new StreamSession(this.raw.meter, this.retry, options);
  }

  // Credits.

  /**
   * Add credits by `{ package }` name or `{ amount }`; `requestId` is the payment id, so a
   * retried webhook grants once.
   *
   * @throws PackageNotFound, RequestIdReused, InvalidArgument.
   */
  grant(
    workspaceId: string,
    requestId: string,
    what: GrantWhat,
    options: GrantOptions = {},
  ): Promise<GrantCreditsResponse> {
    if ((what.package === undefined) === (what.amount === undefined)) {
      throw new TypeError("grant takes a package or an amount, exactly one");
    }
    const request = create(GrantCreditsRequestSchema, {
      workspaceId,
      requestId,
      package: what.package ?? "",
      amount: credits(what.amount) ?? 0n,
      expiresAt: options.expiresAt === undefined ? undefined : timestamp(options.expiresAt),
      source: options.source ?? "",
      actorId: options.actor ?? "",
      labels: { ...options.labels },
      priority: options.priority,
      pending: options.pending ?? false,
    });
    return this.call("GrantCredits", options, (o) => this.raw.meter.grantCredits(request, o));
  }

  // Spend governance: budgets and alert thresholds.

  /**
   * Create or replace the budget `budgetId`: what the requests whose `key` (`actor_id`, or a
   * label key) is `value` may spend per day, week, month or in total. Without a value every
   * value of the key gets a budget of this size. Past it `reserve` and `charge` throw
   * `BudgetExceeded` (`MemberLimitReached` for the `actor_id` key).
   *
   * @throws InvalidArgument naming each bad field (budget.scope_key, budget.limit, ...).
   */
  setBudget(workspaceId: string, budgetId: string, budget: BudgetInit, options: CallControl = {}): Promise<Budget> {
    const request = setBudgetRequest(workspaceId, budgetId, budget);
    return this.call("SetBudget", options, (o) => this.raw.meter.setBudget(request, o));
  }

  /** Remove the budget `budgetId`; false when there was none (nothing changed). */
  async deleteBudget(workspaceId: string, budgetId: string, options: CallControl = {}): Promise<boolean> {
    const answer = await this.call("DeleteBudget", options, (o) =>
      this.raw.meter.deleteBudget({ workspaceId, budgetId }, o),
    );
    return answer.deleted;
  }

  /**
   * The workspace's budgets (member limits included), each with what it has used this period
   * (charged plus held), what is left and when it resets; a default budget (no value) with
   * each value's standing in `values`.
   */
  async budgets(workspaceId: string, options: CallControl = {}): Promise<Budget[]> {
    const answer = await this.call("ListBudgets", options, (o) => this.raw.meter.listBudgets({ workspaceId }, o));
    return answer.budgets;
  }

  /**
   * Set the balance's LOW and CRITICAL thresholds and, with `runwayDays`, when
   * balance.runway_low fires.
   *
   * @throws InvalidArgument critical above low, a negative amount, runwayDays past 3650.
   */
  setAlertThresholds(
    workspaceId: string,
    thresholds: AlertThresholdsInit,
    options: CallControl = {},
  ): Promise<AlertThresholds> {
    const request = create(SetAlertThresholdsRequestSchema, {
      workspaceId,
      low: credits(thresholds.low) ?? 0n,
      critical: credits(thresholds.critical) ?? 0n,
      runwayDays: thresholds.runwayDays,
    });
    return this.call("SetAlertThresholds", options, (o) => this.raw.meter.setAlertThresholds(request, o));
  }

  // Reads.

  /**
   * The workspace's balance, with its `runway`: `burnPerDay` (7 days) and `burnPerDay30d`, and
   * once there is burn `daysLeft`, `zeroAt` and (with auto top-up) `topupAt`.
   *
   * @throws WorkspaceNotFound for a workspace that was never granted credits.
   */
  balance(workspaceId: string, options: CallControl = {}): Promise<Balance> {
    return this.call("GetBalance", options, (o) => this.raw.meter.getBalance({ workspaceId }, o));
  }

  /** One page of journal entries, newest first. */
  transactions(workspaceId: string, options: TransactionsOptions = {}): Promise<ListTransactionsResponse> {
    const request = {
      workspaceId,
      kinds: [...(options.kinds ?? [])],
      operations: [...(options.operations ?? [])],
      actorId: options.actor ?? "",
      startTime: options.since === undefined ? undefined : timestamp(options.since),
      endTime: options.until === undefined ? undefined : timestamp(options.until),
      pageSize: options.pageSize ?? 0,
      pageToken: options.pageToken ?? "",
    };
    return this.call("ListTransactions", options, (o) => this.raw.meter.listTransactions(request, o));
  }

  /**
   * Credits used and counts grouped by operation, actor, day, week or label (the values of the
   * label `labelKey`). By actor or label each row carries what the value holds now and the
   * budgets that apply to it, with their used, remaining and resetsAt.
   *
   * @throws InvalidArgument by "label" without a valid `labelKey`.
   */
  usage(workspaceId: string, by: keyof typeof GROUPING, options: UsageOptions = {}): Promise<GetUsageResponse> {
    const request = {
      workspaceId,
      groupBy: GROUPING[by],
      labelKey: options.labelKey ?? "",
      startTime: options.since === undefined ? undefined : timestamp(options.since),
      endTime: options.until === undefined ? undefined : timestamp(options.until),
    };
    return this.call("GetUsage", options, (o) => this.raw.meter.getUsage(request, o));
  }

  /** One page of the workspace's holds in `states` (none: every state). */
  holds(
    workspaceId: string,
    options: { states?: readonly HoldState[]; pageSize?: number; pageToken?: string } & CallControl = {},
  ): Promise<ListHoldsResponse> {
    const request = {
      workspaceId,
      states: [...(options.states ?? [])],
      pageSize: options.pageSize ?? 0,
      pageToken: options.pageToken ?? "",
    };
    return this.call("ListHolds", options, (o) => this.raw.meter.listHolds(request, o));
  }

  /** The credit packages on sale. */
  packages(options: CallControl = {}): Promise<ListPackagesResponse> {
    return this.call("ListPackages", options, (o) => this.raw.catalog.listPackages({}, o));
  }

  /**
   * The balance now, then one message per change (from any replica) or alert, until the
   * loop stops (`break`) or `signal` fires.
   *
   * Not retried: a watch that fails (Unavailable when a replica drains) is simply watched
   * again, and the balance comes first.
   *
   * @throws MeterError NotFound for an unknown workspace, Unavailable, ...
   */
  async *watchBalance(
    workspaceId: string,
    options: { signal?: AbortSignal | undefined } = {},
  ): AsyncGenerator<WatchBalanceResponse, void, undefined> {
    // Our own signal, so that leaving the loop ends the call too; the caller's aborts it.
    const stop = new AbortController();
    const abort = (): void => stop.abort(options.signal?.reason);
    if (options.signal?.aborted) abort();
    options.signal?.addEventListener("abort", abort, { once: true });
    try {
      for await (const message of this.raw.meter.watchBalance({ workspaceId }, { signal: stop.signal })) {
        yield message;
      }
    } catch (e) {
      throw fromConnectError(e);
    } finally {
      options.signal?.removeEventListener("abort", abort);
      stop.abort();
    }
  }

  // The retrying unary call every method goes through.

  private call<T>(
    method: string,
    control: CallControl,
    attempt: (options: CallOptions) => Promise<T>,
    extraMs = 0,
  ): Promise<T> {
    const { signal } = control;
    return withRetries(this.retry, method, (timeoutMs) => attempt({ timeoutMs, signal }), {
      timeoutMs: control.timeoutMs,
      extraMs,
      signal,
    });
  }
}

function pickRequestId(options: JobOptions): string {
  if (options.requestId && options.jobId) throw new TypeError("give requestId or jobId, not both");
  if (options.requestId) return options.requestId;
  if (options.jobId) return requestIdFor(options.jobId);
  throw new TypeError("a jobId (or a requestId) is required");
}

function missing(method: string): never {
  const error: MeterError = fromConnectError(new Error(`${method} answered without a hold`));
  throw error;
}
