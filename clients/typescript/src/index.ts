/**
 * @meter/client: the TypeScript client of Meter, for Node 20+.
 *
 * ```ts
 * import { MeterClient, InsufficientCredits } from "@meter/client";
 *
 * const meter = new MeterClient();          // METER_TARGET (default 127.0.0.1:50051), METER_TOKEN
 * await meter.job("ws-acme", "content.generate_post", { jobId: job.id, usage: { items: 3 } },
 *   async (j) => { j.actual = await generate(job); });   // committed; released if it throws
 * ```
 */

export { MeterClient } from "./client.js";
export type {
  AlertThresholdsInit,
  CallControl,
  GrantOptions,
  GrantWhat,
  TransactionsOptions,
  UsageOptions,
} from "./client.js";
export { Job } from "./job.js";
export type { JobOptions } from "./job.js";
export { StreamSession } from "./stream.js";
export type { StreamSessionOptions } from "./stream.js";
export { DEFAULT_TARGET } from "./options.js";
export type { MeterClientOptions, Pem, TlsOptions } from "./options.js";
export { DEFAULT_RETRY, NO_RETRY, backoffMs, retryPolicy } from "./retry.js";
export type { RetryEvent, RetryPolicy } from "./retry.js";
export { requestIdFor } from "./ids.js";
export { usage } from "./requests.js";
export type {
  BudgetInit,
  CommitOptions,
  Credits,
  Labels,
  OperationOptions,
  Period,
  ReserveOptions,
  UsageInit,
} from "./requests.js";
export {
  Aborted,
  BudgetExceeded,
  Cancelled,
  Code,
  ConcurrentUpdate,
  DeadlineExceeded,
  DOMAIN,
  FailedPrecondition,
  GrantNotFound,
  HoldCommitted,
  HoldExpired,
  HoldNotFound,
  HoldReleased,
  InsufficientCredits,
  Internal,
  InvalidArgument,
  MemberLimitReached,
  MeterError,
  NotFound,
  OperationNotFound,
  Overloaded,
  PackageNotFound,
  PermissionDenied,
  RequestIdReused,
  RequestInProgress,
  ResourceExhausted,
  Unauthenticated,
  Unavailable,
  Unimplemented,
  WorkspaceNotFound,
  codeName,
  fromConnectError,
  fromStatus,
} from "./errors.js";
export type { FieldViolation } from "./errors.js";
// The generated meter.v1 messages, enums and service descriptors (also "@meter/client/gen/...").
export * from "./gen/meterpb/v1/meter_pb.js";
export * from "./gen/meterpb/v1/catalog_pb.js";
export * from "./gen/meterpb/v1/events_pb.js";
