/** The handle a job gets from `client.job(...)`: its hold, and where it puts its actual cost. */

import type { CommitResponse, Hold } from "./gen/meterpb/v1/meter_pb.js";
import type { CommitOptions, Credits, Labels, UsageInit } from "./requests.js";

/** What `job()` needs of the client: extending the job's hold. */
export interface HoldExtender {
  extend(workspaceId: string, requestId: string, options?: { ttlMs?: number }): Promise<Hold>;
}

export interface JobOptions {
  /** The job's id: the request id is `requestIdFor(jobId)`, so a re-queued job reuses its hold. */
  jobId?: string | undefined;
  /** A request id of the caller's own, instead of a job id. */
  requestId?: string | undefined;
  /** What is held: the catalog's maximum for this usage... */
  usage?: UsageInit | undefined;
  /** ...or an explicit amount of credits. */
  amount?: Credits | undefined;
  actor?: string | undefined;
  labels?: Labels | undefined;
  ttlMs?: number | undefined;
  waitForFundsMs?: number | undefined;
}

/**
 * A running job: set `actual` (credits) or `usage` (the actual usage, priced with the hold's
 * catalog version) before the function returns. With neither, the commit charges what was
 * reserved for (the reserve's usage, or its explicit amount).
 */
export class Job {
  /** The actual cost in credits. */
  actual: Credits | undefined;
  /** The actual usage. */
  usage: UsageInit | undefined;
  /** Labels for the commit. */
  labels: Record<string, string> = {};
  /** The Commit's answer, once the job's function returned and the commit succeeded. */
  result: CommitResponse | undefined;

  constructor(
    private readonly client: HoldExtender,
    readonly workspaceId: string,
    readonly requestId: string,
    /** The hold, as Reserve (and the latest extend()) returned it. */
    public hold: Hold,
    private readonly reservedUsage: UsageInit | undefined,
    private readonly ttlMs: number | undefined,
  ) {}

  /** Push the hold's expiry to `ttlMs` (default: the job's ttl) from now: long jobs heartbeat. */
  async extend(ttlMs?: number): Promise<Hold> {
    const ttl = ttlMs ?? this.ttlMs;
    this.hold = await this.client.extend(
      this.workspaceId,
      this.requestId,
      ttl === undefined ? {} : { ttlMs: ttl },
    );
    return this.hold;
  }

  /** The commit that ends the job: the actual cost, or what was reserved for. */
  commitOptions(): CommitOptions {
    let amount = this.actual;
    let usage = this.usage;
    if (amount === undefined && usage === undefined) {
      if (this.reservedUsage !== undefined) usage = this.reservedUsage;
      else amount = this.hold.amount;
    }
    return { amount, usage, labels: this.labels };
  }
}
