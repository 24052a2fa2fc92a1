/**
 * TypeScript values in their wire form: usages, durations, times, and the ledger requests
 * that the unary calls, stream sessions and `job()` all send.
 */

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type Duration, type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type ChargeRequest,
  ChargeRequestSchema,
  type CommitRequest,
  CommitRequestSchema,
  Complexity,
  type ExtendRequest,
  ExtendRequestSchema,
  Length,
  LimitPeriod,
  type ReserveRequest,
  ReserveRequestSchema,
  type SetBudgetRequest,
  SetBudgetRequestSchema,
  type Usage,
  UsageSchema,
} from "./gen/meterpb/v1/meter_pb.js";

/** Credits: whole units. A number (a safe integer) or a bigint. */
export type Credits = number | bigint;
export type Labels = Readonly<Record<string, string>>;
/** A Usage message, or the fields to make one (`usage()` takes names). */
export type UsageInit = MessageInitShape<typeof UsageSchema>;

const COMPLEXITY: Record<string, Complexity> = {
  simple: Complexity.SIMPLE,
  standard: Complexity.STANDARD,
  complex: Complexity.COMPLEX,
};
const LENGTH: Record<string, Length> = {
  short: Length.SHORT,
  medium: Length.MEDIUM,
  long: Length.LONG,
};

/** A Usage from names: complexity simple|standard|complex, length short|medium|long. */
export function usage(fields: {
  complexity?: "simple" | "standard" | "complex" | Complexity;
  length?: "short" | "medium" | "long" | Length;
  platforms?: number;
  items?: number;
}): Usage {
  const pick = <T>(table: Record<string, T>, v: string | T | undefined, none: T): T => {
    if (v === undefined) return none;
    if (typeof v !== "string") return v;
    const found = table[v.toLowerCase()];
    if (found === undefined) throw new TypeError(`unknown usage value ${JSON.stringify(v)}`);
    return found;
  };
  return create(UsageSchema, {
    complexity: pick(COMPLEXITY, fields.complexity, Complexity.UNSPECIFIED),
    length: pick(LENGTH, fields.length, Length.UNSPECIFIED),
    platforms: fields.platforms ?? 0,
    items: fields.items ?? 0,
  });
}

export function duration(ms: number): Duration {
  const whole = Math.floor(ms / 1000);
  return {
    $typeName: "google.protobuf.Duration",
    seconds: BigInt(whole),
    nanos: Math.round((ms - whole * 1000) * 1e6),
  };
}

export function timestamp(date: Date): Timestamp {
  return timestampFromDate(date);
}

export function credits(value: Credits | undefined): bigint | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new TypeError(`credits are whole numbers, got ${value}`);
  }
  return BigInt(value);
}

/** What prices a Reserve, Charge or Commit: a usage for the catalog, or an explicit amount. */
export interface Priced {
  usage?: UsageInit | undefined;
  amount?: Credits | undefined;
}

/** What a Reserve or Charge says about its operation besides the price. */
export interface OperationOptions extends Priced {
  /** The member (user) the job runs for: member limits and usage by actor. */
  actor?: string | undefined;
  labels?: Labels | undefined;
}

export interface ReserveOptions extends OperationOptions {
  /** How long the hold lasts (default 15 min, at most 24 h). */
  ttlMs?: number | undefined;
  /** Wait up to this long (at most 10 min) for a grant instead of failing at once. */
  waitForFundsMs?: number | undefined;
}

export interface CommitOptions extends Priced {
  labels?: Labels | undefined;
}

export function reserveRequest(
  workspaceId: string,
  requestId: string,
  operation: string,
  o: ReserveOptions = {},
): ReserveRequest {
  return create(ReserveRequestSchema, {
    workspaceId,
    requestId,
    operation,
    usage: o.usage,
    amount: credits(o.amount),
    actorId: o.actor ?? "",
    labels: { ...o.labels },
    ttl: o.ttlMs === undefined ? undefined : duration(o.ttlMs),
    waitForFunds: o.waitForFundsMs === undefined ? undefined : duration(o.waitForFundsMs),
  });
}

export function commitRequest(
  workspaceId: string,
  requestId: string,
  o: CommitOptions = {},
): CommitRequest {
  return create(CommitRequestSchema, {
    workspaceId,
    requestId,
    usage: o.usage,
    amount: credits(o.amount),
    labels: { ...o.labels },
  });
}

export function extendRequest(workspaceId: string, requestId: string, ttlMs?: number): ExtendRequest {
  return create(ExtendRequestSchema, {
    workspaceId,
    requestId,
    ttl: ttlMs === undefined ? undefined : duration(ttlMs),
  });
}

export function chargeRequest(
  workspaceId: string,
  requestId: string,
  operation: string,
  o: OperationOptions = {},
): ChargeRequest {
  return create(ChargeRequestSchema, {
    workspaceId,
    requestId,
    operation,
    usage: o.usage,
    amount: credits(o.amount),
    actorId: o.actor ?? "",
    labels: { ...o.labels },
  });
}

/** A budget's or member limit's period: a UTC calendar day, week (from Monday), month, or a total that never resets. */
export type Period = "day" | "week" | "month" | "total";

const PERIOD: Record<Period, LimitPeriod> = {
  day: LimitPeriod.DAY,
  week: LimitPeriod.WEEK,
  month: LimitPeriod.MONTH,
  total: LimitPeriod.TOTAL,
};

/** What a budget limits: who (`key` and `value`), per what, and how much. */
export interface BudgetInit {
  /** `actor_id`, or a label key the requests carry (`project`, `team`, `api_key`, `agent`, ...). */
  key: string;
  /** One value of the key; omitted: every value of the key has its own budget of this size. */
  value?: string | undefined;
  period: Period | LimitPeriod;
  limit: Credits;
  /** Percentages of the limit whose crossing writes a budget.threshold event (none: 80). */
  warnAt?: readonly number[] | undefined;
  /** Default true; a disabled budget refuses nothing. */
  enabled?: boolean | undefined;
}

export function limitPeriod(period: Period | LimitPeriod): LimitPeriod {
  if (typeof period !== "string") return period;
  const found = PERIOD[period.toLowerCase() as Period] as LimitPeriod | undefined;
  if (found === undefined) throw new TypeError(`unknown period ${JSON.stringify(period)} (day, week, month or total)`);
  return found;
}

export function setBudgetRequest(workspaceId: string, budgetId: string, b: BudgetInit): SetBudgetRequest {
  return create(SetBudgetRequestSchema, {
    workspaceId,
    budget: {
      budgetId,
      scopeKey: b.key,
      scopeValue: b.value ?? "",
      period: limitPeriod(b.period),
      limit: credits(b.limit) ?? 0n,
      warnAt: [...(b.warnAt ?? [])],
      enabled: b.enabled ?? true,
    },
  });
}
