/**
 * A server with authentication and TLS on: the token travels as `authorization: Bearer ...`
 * over a connection verified against the server's own CA.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { MeterClient, Unauthenticated } from "../src/index.js";
import { type Server, createToken, rid, serve, shared, ws } from "./harness.js";

const run = promisify(execFile);
let dir: string;
let server: Server;
let token: string;
let ca: { path: string };

before(async () => {
  const { db } = shared();
  dir = mkdtempSync(join(tmpdir(), "meter-ts-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  // A self-signed certificate for 127.0.0.1, its own CA: what the client is told to trust.
  await run("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=meter-test",
    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
  ]);
  ca = { path: cert };
  token = await createToken(db, "admin");
  server = await serve(db, { requireAuth: true, tlsCert: cert, tlsKey: key, noWait: true });
  await server.ready(60_000, { tls: { ca } });
});

after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("a call without a token is Unauthenticated", async () => {
  const meter = new MeterClient({ target: server.target, tls: { ca }, token: "" });
  try {
    await assert.rejects(meter.balance(ws()), Unauthenticated);
  } finally {
    meter.close();
  }
});

test("a call with a wrong token is Unauthenticated", async () => {
  const meter = new MeterClient({ target: server.target, tls: { ca }, token: "mtr_not-a-token" });
  try {
    await assert.rejects(meter.balance(ws()), Unauthenticated);
  } finally {
    meter.close();
  }
});

test("with the admin's token over TLS the calls succeed", async () => {
  const meter = new MeterClient({ target: server.target, tls: { ca }, token });
  try {
    const w = ws();
    await meter.grant(w, rid("pay"), { amount: 12 });
    assert.equal((await meter.balance(w)).available, 12n);
  } finally {
    meter.close();
  }
});

test("a server whose certificate the client does not trust is not called", async () => {
  const meter = new MeterClient({ target: server.target, tls: true, token, retry: { maxAttempts: 1 } });
  try {
    await assert.rejects(meter.balance(ws()), (e: Error) => /certificate/i.test(String(e.message)));
  } finally {
    meter.close();
  }
});
