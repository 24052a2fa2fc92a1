/**
 * Request ids, the keys that make a retried call change nothing: given, or from a job id.
 * The same rules as the Python client's `meter.client.ids`, so a job re-queued from a Python
 * worker to a Node one (or back) finds its hold.
 */

import { createHash } from "node:crypto";

const ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
// Request ids derived from job ids live in their own uuid5 namespace, so the same job id
// always gives the same request id, on every worker, in every language, after every restart.
const JOB_NAMESPACE = "6f1d3c52-8e0b-5a4f-9f43-0d2b7c9e6a11";

/** RFC 4122 version 5 (SHA-1, name-based) UUID of `name` in `namespace`. */
export function uuid5(namespace: string, name: string): string {
  const ns = Buffer.from(namespace.replaceAll("-", ""), "hex");
  const hash = createHash("sha1").update(ns).update(name, "utf8").digest();
  const b = hash.subarray(0, 16);
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x50;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const hex = b.toString("hex");
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)]
    .join("-");
}

/**
 * The request id of a job: the same job id always gives the same request id.
 *
 * A job id that is already a valid id becomes `job:<id>` (readable in the journal); any other
 * (too long, other characters) becomes `job:<uuid5 of it>`.
 */
export function requestIdFor(jobId: string): string {
  if (!jobId) throw new TypeError("jobId must not be empty");
  if (ID_RE.test(jobId) && jobId.length <= 124) return `job:${jobId}`;
  return `job:${uuid5(JOB_NAMESPACE, jobId)}`;
}
