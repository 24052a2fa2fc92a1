/**
 * Typed errors for Meter's refusals, built from a gRPC status and its rich details.
 *
 * Every failed call throws a `MeterError` subclass chosen by the `google.rpc.ErrorInfo`
 * reason first (the precise case, e.g. `InsufficientCredits`) and by the status code
 * otherwise (`NotFound`, `Unavailable`, ...), so callers catch what they can act on and read
 * its details as fields. The classes mirror the Python client's `meter.client.errors`.
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import type { Status } from "./gen/google/rpc/status_pb.js";

export { Code };

/** The ErrorInfo domain of Meter's own reasons. */
export const DOMAIN = "meter";

/** One bad field of a request, from google.rpc.BadRequest. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

export interface MeterErrorInit {
  reason?: string;
  metadata?: Record<string, string>;
  fieldViolations?: readonly FieldViolation[];
  /** Milliseconds the server asks to wait before retrying (RetryInfo). */
  retryDelayMs?: number | undefined;
  cause?: unknown;
}

/** A call that Meter refused, or that could not reach it. */
export class MeterError extends Error {
  /** Whether retrying the same request (same request id) later may succeed. */
  get retryable(): boolean {
    return false;
  }

  /** The gRPC status code. */
  readonly code: Code;
  /** The ErrorInfo reason (e.g. `INSUFFICIENT_CREDITS`), or the code's name. */
  readonly reason: string;
  /** ErrorInfo metadata (string values). */
  readonly metadata: Readonly<Record<string, string>>;
  /** The bad fields of an invalid request. */
  readonly fieldViolations: readonly FieldViolation[];
  /** Milliseconds the server asks to wait before retrying (RetryInfo), if it said. */
  readonly retryDelayMs: number | undefined;

  constructor(code: Code, message: string, init: MeterErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = code;
    this.reason = init.reason || codeName(code);
    this.metadata = { ...init.metadata };
    this.fieldViolations = init.fieldViolations ?? [];
    this.retryDelayMs = init.retryDelayMs;
  }

  override toString(): string {
    return `${this.name}: ${this.reason}: ${this.message}`;
  }

  protected int(key: string): number {
    const n = Number(this.metadata[key] ?? 0);
    return Number.isFinite(n) ? n : 0;
  }
}

/** A malformed request; `fieldViolations` names each bad field. */
export class InvalidArgument extends MeterError {}
/** The request id was used before with other parameters; this request did not run. */
export class RequestIdReused extends InvalidArgument {}

/** An unknown workspace, hold, operation, package or grant. */
export class NotFound extends MeterError {}
export class WorkspaceNotFound extends NotFound {}
export class HoldNotFound extends NotFound {}
export class OperationNotFound extends NotFound {}
export class PackageNotFound extends NotFound {}
export class GrantNotFound extends NotFound {}

/** The request is well formed but the ledger's state refuses it. */
export class FailedPrecondition extends MeterError {}

/** Not enough available credits; nothing was held or charged. */
export class InsufficientCredits extends FailedPrecondition {
  get required(): number {
    return this.int("required");
  }
  get available(): number {
    return this.int("available");
  }
  get shortfall(): number {
    return this.int("shortfall");
  }
  /** The smallest package that covers the shortfall, if one does. */
  get suggestedPackage(): string | undefined {
    return this.metadata["suggested_package"] || undefined;
  }
}

/**
 * The request would take a budget its actor or labels fall under past its limit (DESIGN §13);
 * nothing was held. The fields describe the budget with the least room. A budget of the
 * `actor_id` key (a member limit) is refused as `MemberLimitReached`, a subclass, so
 * `instanceof BudgetExceeded` catches every spend limit.
 */
export class BudgetExceeded extends FailedPrecondition {
  get budgetId(): string {
    return this.metadata["budget_id"] ?? "";
  }
  /** `actor_id`, or the label key (project, team, ...). */
  get scopeKey(): string {
    return this.metadata["scope_key"] ?? "";
  }
  /** The request's value of `scopeKey` (the actor id, the project, ...). */
  get scopeValue(): string {
    return this.metadata["scope_value"] ?? "";
  }
  /** day, week, month or total. */
  get period(): string {
    return this.metadata["period"] ?? "";
  }
  get limit(): number {
    return this.int("limit");
  }
  /** Charged in the period plus held now, before this request. */
  get used(): number {
    return this.int("used");
  }
  get remaining(): number {
    return this.int("remaining");
  }
  /** What the refused request asked for. */
  get required(): number {
    return this.int("required");
  }
  /** When the budget's period ends (ISO 8601, UTC); empty for a total budget. */
  get resetsAt(): string {
    return this.metadata["resets_at"] ?? "";
  }
}

/** The member (actor_id) would go past one of its spend limits; nothing was held. */
export class MemberLimitReached extends BudgetExceeded {}

export class HoldReleased extends FailedPrecondition {}
export class HoldCommitted extends FailedPrecondition {}
export class HoldExpired extends FailedPrecondition {}

/** A conflict the server could not resolve in time; retry with the same request id. */
export class Aborted extends MeterError {
  override get retryable(): boolean {
    return true;
  }
}
export class RequestInProgress extends Aborted {}
export class ConcurrentUpdate extends Aborted {}

/** Too much in flight (backpressure, rate limit); retry after `retryDelayMs`. */
export class ResourceExhausted extends MeterError {
  override get retryable(): boolean {
    return true;
  }
}
export class Overloaded extends ResourceExhausted {}

/** The server (or its database) cannot be reached now; retry with the same request id. */
export class Unavailable extends MeterError {
  override get retryable(): boolean {
    return true;
  }
}

/** No answer in time: the call may or may not have taken effect; retry to find out. */
export class DeadlineExceeded extends MeterError {
  override get retryable(): boolean {
    return true;
  }
}

export class Unauthenticated extends MeterError {}
export class PermissionDenied extends MeterError {}
/** The server does not serve this call (yet). */
export class Unimplemented extends MeterError {}
/** The caller cancelled the call (its AbortSignal fired). */
export class Cancelled extends MeterError {}
export class Internal extends MeterError {}

type ErrorClass = new (code: Code, message: string, init?: MeterErrorInit) => MeterError;

const BY_REASON: Readonly<Record<string, ErrorClass>> = {
  REQUEST_ID_REUSED: RequestIdReused,
  WORKSPACE_NOT_FOUND: WorkspaceNotFound,
  HOLD_NOT_FOUND: HoldNotFound,
  OPERATION_NOT_FOUND: OperationNotFound,
  PACKAGE_NOT_FOUND: PackageNotFound,
  GRANT_NOT_FOUND: GrantNotFound,
  INSUFFICIENT_CREDITS: InsufficientCredits,
  MEMBER_LIMIT_REACHED: MemberLimitReached,
  BUDGET_EXCEEDED: BudgetExceeded,
  HOLD_RELEASED: HoldReleased,
  HOLD_COMMITTED: HoldCommitted,
  HOLD_EXPIRED: HoldExpired,
  REQUEST_IN_PROGRESS: RequestInProgress,
  CONCURRENT_UPDATE: ConcurrentUpdate,
  OVERLOADED: Overloaded,
};

const BY_CODE: Partial<Record<Code, ErrorClass>> = {
  [Code.InvalidArgument]: InvalidArgument,
  [Code.OutOfRange]: InvalidArgument,
  [Code.NotFound]: NotFound,
  [Code.FailedPrecondition]: FailedPrecondition,
  [Code.Aborted]: Aborted,
  [Code.ResourceExhausted]: ResourceExhausted,
  [Code.Unavailable]: Unavailable,
  [Code.DeadlineExceeded]: DeadlineExceeded,
  [Code.Unauthenticated]: Unauthenticated,
  [Code.PermissionDenied]: PermissionDenied,
  [Code.Unimplemented]: Unimplemented,
  [Code.Canceled]: Cancelled,
};

/** `FAILED_PRECONDITION` for Code.FailedPrecondition: the names gRPC and the server use. */
export function codeName(code: Code): string {
  const name = Code[code] as string | undefined;
  if (name === undefined) return `CODE_${code}`;
  return name === "Canceled" ? "CANCELLED" : name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

interface Details {
  reason: string;
  metadata: Record<string, string>;
  fieldViolations: FieldViolation[];
  retryDelayMs: number | undefined;
}

function details(find: <D extends DescMessage>(desc: D) => MessageShape<D>[]): Details {
  const out: Details = { reason: "", metadata: {}, fieldViolations: [], retryDelayMs: undefined };
  for (const info of find(ErrorInfoSchema)) {
    if (info.domain === DOMAIN) {
      out.reason = info.reason;
      out.metadata = { ...info.metadata };
    }
  }
  for (const bad of find(BadRequestSchema)) {
    for (const v of bad.fieldViolations) {
      out.fieldViolations.push({ field: v.field, description: v.description });
    }
  }
  for (const retry of find(RetryInfoSchema)) {
    const d = retry.retryDelay;
    if (d !== undefined) out.retryDelayMs = Number(d.seconds) * 1000 + d.nanos / 1e6;
  }
  return out;
}

function typed(code: Code, message: string, d: Details, cause?: unknown): MeterError {
  const cls = BY_REASON[d.reason] ?? BY_CODE[code] ?? Internal;
  return new cls(code, message, { ...d, cause });
}

/** The typed error for a google.rpc.Status (as in a Stream result). */
export function fromStatus(status: Status): MeterError {
  const code = (status.code in Code ? status.code : Code.Unknown) as Code;
  const find = <D extends DescMessage>(desc: D): MessageShape<D>[] =>
    status.details.flatMap((any) => {
      const m = anyUnpack(any, desc);
      return m === undefined ? [] : [m];
    });
  return typed(code, status.message, details(find));
}

/**
 * The typed error for anything a Connect call threw: a ConnectError (its
 * grpc-status-details-bin decoded lazily with the generated google.rpc types), or any other
 * value, which becomes an `Internal` error with it as the cause. A MeterError passes through.
 */
export function fromConnectError(error: unknown): MeterError {
  if (error instanceof MeterError) return error;
  if (!(error instanceof ConnectError)) {
    const message = error instanceof Error ? error.message : String(error);
    return new Internal(Code.Internal, message, { cause: error });
  }
  const find = <D extends DescMessage>(desc: D): MessageShape<D>[] => {
    try {
      return error.findDetails(desc);
    } catch {
      return []; // a detail that does not decode is no reason to hide the status
    }
  };
  return typed(error.code, error.rawMessage, details(find), error);
}
