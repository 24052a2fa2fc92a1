/**
 * Real `meter serve` processes for the tests, on a database of the run's own.
 *
 * The database is a fresh one in METER_TEST_DATABASE_URL's server (created here, dropped
 * after, as the Python suite's tests/conftest.py does), or else an embedded PostgreSQL in a
 * temporary --data-dir, which every server of the run shares. `meter` is the repository's
 * venv's (METER_BIN overrides it).
 */

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Code, MeterClient, type MeterClientOptions, NO_RETRY } from "../src/index.js";

const run = promisify(execFile);

/** The repository: the nearest folder above this file with protos/ and pyproject.toml. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!(existsSync(join(dir, "pyproject.toml")) && existsSync(join(dir, "protos")))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("no repository root above the tests");
    dir = up;
  }
  return dir;
}

export const METER_BIN = process.env["METER_BIN"] ?? join(repoRoot(), ".venv", "bin", "meter");
const PYTHON = join(dirname(METER_BIN), "python");

/** Where the servers' data lives: the environment every `meter` command of the run gets. */
export interface Database {
  readonly env: Readonly<Record<string, string>>;
  drop(): Promise<void>;
}

async function sql(url: string, statement: string): Promise<void> {
  // psycopg from the venv beside `meter`: the tests need no PostgreSQL driver of their own.
  const code = "import psycopg, sys\nwith psycopg.connect(sys.argv[1], autocommit=True) as c: c.execute(sys.argv[2])";
  await run(PYTHON, ["-c", code, url, statement]);
}

export async function createDatabase(): Promise<Database> {
  const base = process.env["METER_TEST_DATABASE_URL"];
  if (!base) {
    const dir = mkdtempSync(join(tmpdir(), "meter-ts-pg-"));
    return {
      env: { METER_DATA_DIR: dir },
      drop: async () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  const name = `meter_ts_${process.pid}_${randomBytes(3).toString("hex")}`;
  await sql(base, `CREATE DATABASE "${name}"`);
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    env: { METER_DATABASE_URL: url.toString() },
    drop: () => sql(base, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`),
  };
}

/** A port nobody listens on now. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      s.close(() => (typeof address === "object" && address ? resolvePort(address.port) : reject()));
    });
  });
}

function serverEnv(db: Database): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...db.env, METER_LOG_LEVEL: "warning" };
  // The run's database only: none inherited from the shell.
  if (!("METER_DATABASE_URL" in db.env)) delete env["METER_DATABASE_URL"];
  delete env["METER_REQUIRE_AUTH"];
  return env;
}

export interface ServeOptions {
  port?: number;
  requireAuth?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  /** Resolve at once, without waiting for the server to answer. */
  noWait?: boolean;
}

export class Server {
  private exited: Promise<number | null>;
  private log = "";

  constructor(
    readonly process: ChildProcess,
    readonly port: number,
  ) {
    this.exited = new Promise((done) => process.once("exit", (code) => done(code)));
    process.stderr?.on("data", (chunk: Buffer) => {
      this.log = (this.log + chunk.toString()).slice(-4000);
    });
    process.stdout?.resume();
  }

  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Wait until a call gets an answer (any answer: with auth on, Unauthenticated is one). */
  async ready(timeoutMs = 60_000, client: MeterClientOptions = {}): Promise<void> {
    const probe = new MeterClient({ target: this.target, retry: NO_RETRY, ...client });
    const until = performance.now() + timeoutMs;
    try {
      for (;;) {
        const answered = await Promise.race([
          probe.packages({ timeoutMs: 1_000 }).then(
            () => true,
            (e: { code?: unknown }) => e.code === Code.Unauthenticated,
          ),
          this.exited.then((code) => {
            throw new Error(`meter serve exited (${code}) before serving:\n${this.log}`);
          }),
        ]);
        if (answered) return;
        if (performance.now() > until) throw new Error(`meter serve did not answer:\n${this.log}`);
        await new Promise((r) => setTimeout(r, 50)); // a poll's pace, not a wait for something
      }
    } finally {
      probe.close();
    }
  }

  /** SIGTERM (graceful), SIGKILL if it lingers; resolves when the process is gone. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    this.process.kill(signal);
    const timer = setTimeout(() => this.process.kill("SIGKILL"), 15_000);
    await this.exited;
    clearTimeout(timer);
  }
}

export async function serve(db: Database, options: ServeOptions = {}): Promise<Server> {
  const port = options.port ?? (await freePort());
  const args = ["serve", "--listen", `127.0.0.1:${port}`];
  if (options.requireAuth) args.push("--require-auth");
  if (options.tlsCert) args.push("--tls-cert", options.tlsCert);
  if (options.tlsKey) args.push("--tls-key", options.tlsKey);
  const child = spawn(METER_BIN, args, { env: serverEnv(db), stdio: ["ignore", "pipe", "pipe"] });
  const server = new Server(child, port);
  if (!options.noWait) {
    try {
      await server.ready();
    } catch (e) {
      await server.stop("SIGKILL");
      throw e;
    }
  }
  return server;
}

/** A principal's token, made with `meter token create` on the run's database. */
export async function createToken(db: Database, role: string): Promise<string> {
  const name = `ts-${randomBytes(4).toString("hex")}`;
  const { stdout } = await run(METER_BIN, ["token", "create", "--role", role, "--name", name], {
    env: serverEnv(db),
  });
  return stdout.trim().split("\n")[0] ?? "";
}

/** The database and server the whole run shares (test/run.ts exports where they are). */
export interface Shared {
  readonly db: Database;
  readonly target: string;
}

export function shared(): Shared {
  const target = process.env["METER_TS_TARGET"];
  const env = process.env["METER_TS_DB_ENV"];
  if (!target || !env) {
    throw new Error("run the tests with `npm test` (test/run.ts starts the database and server)");
  }
  return { target, db: { env: JSON.parse(env) as Record<string, string>, drop: async () => {} } };
}

/** A workspace id of the test's own: tests share one database. */
export function ws(): string {
  return `ws-ts-${randomBytes(6).toString("hex")}`;
}

/** A request id of the test's own. */
export function rid(prefix = "r"): string {
  return `${prefix}-${randomBytes(6).toString("hex")}`;
}

export const here = resolve(dirname(fileURLToPath(import.meta.url)));
