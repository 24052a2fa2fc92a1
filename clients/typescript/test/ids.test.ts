/** Request ids from job ids: the same as the Python client's, so jobs move between languages. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { requestIdFor } from "../src/index.js";

test("a valid job id becomes job:<id>; any other, job:<uuid5> as meter.client.ids makes it", () => {
  // Expected values printed by the Python client: meter.client.ids.request_id_for(...).
  assert.deepEqual(
    [
      "job:42",
      "job:fae33c2e-abd8-5039-a7bb-0159ae68f93a",
      "job:a260138b-f032-562b-a201-9beb8168e398",
      "job:fd344a0a-e51b-5029-b8f0-97ba98002f7d",
    ],
    [requestIdFor("42"), requestIdFor("job with spaces"), requestIdFor("x".repeat(125)), requestIdFor("é")],
  );
  assert.equal(`job:${"y".repeat(124)}`, requestIdFor("y".repeat(124)));
  assert.throws(() => requestIdFor(""), TypeError);
});
