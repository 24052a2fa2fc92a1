/**
 * `npm test`: one database and one `meter serve` for the whole run, then `node --test` over
 * every test file (each may start servers of its own on the same database), then cleanup.
 */

import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { createDatabase, here, serve } from "./harness.js";

const db = await createDatabase();
let code = 1;
try {
  const server = await serve(db);
  try {
    const files = readdirSync(here)
      .filter((f) => f.endsWith(".test.js"))
      .map((f) => join(here, f));
    // One file at a time (they share the server, and the machine has two cores); no test may
    // hang the run.
    const args = ["--test", "--test-concurrency=1", "--test-timeout=60000", ...process.argv.slice(2), ...files];
    const child = spawn(process.execPath, args, {
      stdio: "inherit",
      env: { ...process.env, METER_TS_TARGET: server.target, METER_TS_DB_ENV: JSON.stringify(db.env) },
    });
    code = await new Promise<number>((done) => child.once("exit", (c) => done(c ?? 1)));
  } finally {
    await server.stop();
  }
} finally {
  await db.drop();
}
process.exit(code);
