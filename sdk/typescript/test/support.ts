// Starts the real vevee binary (built by `cargo build`) on a free port with a fresh data directory.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const SECRET_KEY = "sk_test_sdk_suite";
export const PUBLISHABLE_KEY = "pk_test_sdk_suite";
export const LIVE_KEY = "sk_live_sdk_suite";

/** `target/debug/vevee` of this repository, or `$VEVEE_BIN`. */
export function binaryPath(): string {
  const fromEnv = process.env.VEVEE_BIN;
  if (fromEnv) return fromEnv;
  // build-test/test/support.js → the repository root is four levels up.
  return fileURLToPath(new URL("../../../../target/debug/vevee", import.meta.url));
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") return reject(new Error("no port"));
      server.close(() => resolve(address.port));
    });
  });
}

export interface RunningServer {
  baseUrl: string;
  port: number;
  /** What the server printed so far, to show when a test fails. */
  output(): string;
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 20_000;

export interface ServerOptions {
  /** Extra lines for the config's `[server]` table, e.g. `sandbox_requests_per_second = 3`. */
  serverConfig?: string[];
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const bin = binaryPath();
  if (!existsSync(bin)) {
    throw new Error(`no vevee binary at ${bin}: run \`cargo build\` at the repository root first`);
  }
  const dir = await mkdtemp(join(tmpdir(), "vevee-sdk-"));
  for (let tries = 0; ; tries++) {
    const port = await freePort();
    const config = join(dir, "config.toml");
    await writeFile(
      config,
      [
        "[server]",
        `listen = "127.0.0.1:${port}"`,
        ...(options.serverConfig ?? []),
        "[storage]",
        `data_dir = "${join(dir, "data")}"`,
        `snapshot_dir = "${join(dir, "snapshots")}"`,
        "[[apps]]",
        'id = "pixelforge"',
        `secret_key_test = "${SECRET_KEY}"`,
        `publishable_key_test = "${PUBLISHABLE_KEY}"`,
        `secret_key_live = "${LIVE_KEY}"`,
        'stripe_webhook_secret_test = "whsec_sdk_suite"',
        "seed_demo_catalog = true",
        "",
      ].join("\n"),
    );
    let log = "";
    const child = spawn(bin, ["serve", "--config", config], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
    });
    child.stdout!.on("data", (b: Buffer) => (log += b.toString()));
    child.stderr!.on("data", (b: Buffer) => (log += b.toString()));
    const baseUrl = `http://127.0.0.1:${port}`;
    const ready = await waitReady(baseUrl, child);
    if (!ready) {
      await kill(child);
      // Another process may have taken the port between our probe and the bind: try another.
      if (tries < 3) continue;
      await rm(dir, { recursive: true, force: true });
      throw new Error(`vevee did not become ready on ${baseUrl}:\n${log}`);
    }
    return {
      baseUrl,
      port,
      output: () => log,
      async stop() {
        await kill(child);
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

async function waitReady(baseUrl: string, child: ChildProcess): Promise<boolean> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    try {
      const response = await fetch(`${baseUrl}/readyz`);
      await response.arrayBuffer();
      if (response.status === 200) return true;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}
