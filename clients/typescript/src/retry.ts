/**
 * Retries with exponential backoff and full jitter, under a per-attempt deadline and an
 * overall budget: the Python client's `meter.client.retry`, in milliseconds.
 */

import { Cancelled, Code, MeterError, fromConnectError } from "./errors.js";

/** One failed attempt that will be retried (for logs and metrics). */
export interface RetryEvent {
  readonly method: string;
  /** The attempt that failed, 1-based. */
  readonly attempt: number;
  readonly error: MeterError;
  /** Milliseconds until the next attempt. */
  readonly delayMs: number;
}

/**
 * Exponential backoff with full jitter, under an overall budget.
 *
 * A retryable failure (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED) is retried
 * with the *same request*, so the same request id: the server answers a retry of a call that
 * did take effect with the first answer and charges nothing again.
 */
export interface RetryPolicy {
  /** Attempts in all, the first included. */
  readonly maxAttempts: number;
  /**
   * The backoff after attempt n is drawn uniformly from
   * [0, min(maxBackoffMs, initialBackoffMs * multiplier^(n-1))]; a server's RetryInfo delay is
   * a floor under it.
   */
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly multiplier: number;
  /** The deadline of the first attempt. */
  readonly attemptTimeoutMs: number;
  /** Later attempts get longer deadlines (a first one too short for a slow moment should
   * not doom every retry), up to maxAttemptTimeoutMs. */
  readonly attemptTimeoutMultiplier: number;
  readonly maxAttemptTimeoutMs: number;
  /** Milliseconds for all attempts and backoffs together; no attempt outlives it. */
  readonly budgetMs: number;
  /** Called before each backoff sleep. */
  readonly onRetry?: ((event: RetryEvent) => void) | undefined;
  /** A number in [0, 1) (Math.random); tests pin it. */
  readonly random?: (() => number) | undefined;
}

export const DEFAULT_RETRY: RetryPolicy = Object.freeze({
  maxAttempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 5_000,
  multiplier: 2,
  attemptTimeoutMs: 10_000,
  attemptTimeoutMultiplier: 1,
  maxAttemptTimeoutMs: 60_000,
  budgetMs: 60_000,
});

/** One attempt, no retry. */
export const NO_RETRY: RetryPolicy = Object.freeze({ ...DEFAULT_RETRY, maxAttempts: 1 });

/** The default policy with some settings changed. */
export function retryPolicy(changes: Partial<RetryPolicy> = {}): RetryPolicy {
  return Object.freeze({ ...DEFAULT_RETRY, ...changes });
}

/** Milliseconds to sleep after failed attempt number `attempt` (1-based). */
export function backoffMs(policy: RetryPolicy, attempt: number, error: MeterError): number {
  const cap = Math.min(
    policy.maxBackoffMs,
    policy.initialBackoffMs * policy.multiplier ** (attempt - 1),
  );
  const delay = (policy.random ?? Math.random)() * cap;
  return error.retryDelayMs === undefined ? delay : Math.max(delay, error.retryDelayMs);
}

/** What one call's attempts share: deadlines, the budget left, whether to retry. */
export class Attempts {
  attempt = 0;
  private readonly start = performance.now();
  private unreachable: MeterError | undefined;

  /**
   * @param timeoutMs a fixed deadline for every attempt instead of the policy's.
   * @param extraMs time the server may legitimately take on top (Reserve's waitForFunds),
   *   added to every deadline and to the budget.
   */
  constructor(
    readonly policy: RetryPolicy,
    readonly method: string,
    readonly timeoutMs?: number,
    readonly extraMs = 0,
  ) {}

  remainingMs(): number {
    return this.policy.budgetMs + this.extraMs - (performance.now() - this.start);
  }

  /** Start an attempt: its deadline in milliseconds. */
  nextTimeoutMs(): number {
    this.attempt += 1;
    const left = Math.max(this.remainingMs(), 1);
    if (this.timeoutMs !== undefined) return Math.min(this.timeoutMs + this.extraMs, left);
    const p = this.policy;
    const own = p.attemptTimeoutMs * p.attemptTimeoutMultiplier ** (this.attempt - 1);
    const t = Math.max(Math.min(own, p.maxAttemptTimeoutMs, left - this.extraMs), 0);
    return Math.max(Math.round(t + this.extraMs), 1);
  }

  /** The sleep before the next attempt; throws `error` when there is none to make. */
  backoffMs(error: MeterError): number {
    const left = this.remainingMs();
    if (error.code === Code.Unavailable) this.unreachable = error;
    if (!(error.retryable && this.attempt < this.policy.maxAttempts && left > 0)) {
      // Retries that only waited for a connection that never came back: say so.
      if (this.unreachable !== undefined && error.code === Code.DeadlineExceeded) {
        throw this.unreachable;
      }
      throw error;
    }
    const delayMs = Math.min(backoffMs(this.policy, this.attempt, error), Math.max(left, 0));
    this.policy.onRetry?.({ method: this.method, attempt: this.attempt, error, delayMs });
    return delayMs;
  }
}

function cancelled(reason: unknown): Cancelled {
  return new Cancelled(Code.Canceled, "the call was cancelled", { cause: reason });
}

/** Sleep, or reject with `Cancelled` as soon as the signal fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(cancelled(signal.reason));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(cancelled(signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export interface RetryOptions {
  timeoutMs?: number | undefined;
  extraMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

/**
 * Run `attempt` (given its deadline in milliseconds) until it succeeds, fails for good, or the
 * policy gives up; every failure is turned into a typed MeterError first.
 */
export async function withRetries<T>(
  policy: RetryPolicy,
  method: string,
  attempt: (timeoutMs: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const tries = new Attempts(policy, method, options.timeoutMs, options.extraMs ?? 0);
  for (;;) {
    let error: MeterError;
    try {
      return await attempt(tries.nextTimeoutMs());
    } catch (e) {
      error = fromConnectError(e);
    }
    if (options.signal?.aborted) throw error; // the caller's own cancellation: no retry
    await sleep(tries.backoffMs(error), options.signal);
  }
}
