// A retried reserve holds once. A tiny TCP proxy in front of the real server forwards the first
// reserve, lets the server answer it, and cuts the client's connection instead of passing the answer
// on: the client saw a network failure, the server held the units. The SDK retries with the same
// Idempotency-Key and gets the stored answer back; the user's usage and ledger show one hold.

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { createClient, type FetchLike, type LedgerEntry, type VeveeClient } from "@vevee/sdk";
import { SECRET_KEY, startServer, type RunningServer } from "./support.js";

const GEMINI = "image.gemini-3-1-flash-image-preview";

interface DroppingProxy {
  baseUrl: string;
  /** Cut the answer to the next `count` POSTs to `path`. */
  dropNext(path: string, count: number): void;
  /** Every request that went through, dropped or not, with its Idempotency-Key. */
  requests: Array<{ method: string; path: string; key: string | null }>;
  dropped: number;
  close(): Promise<void>;
}

async function startDroppingProxy(upstreamPort: number): Promise<DroppingProxy> {
  const sockets = new Set<net.Socket>();
  const rules: Array<{ path: string; count: number }> = [];
  const proxy: DroppingProxy = {
    baseUrl: "",
    dropNext: (path, count) => void rules.push({ path, count }),
    requests: [],
    dropped: 0,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    client.on("close", () => sockets.delete(client));
    upstream.on("close", () => sockets.delete(upstream));
    let cutting = false;
    client.on("data", (chunk: Buffer) => {
      // A request line starts a chunk: Node's fetch writes each request's head in one write.
      const text = chunk.toString("latin1");
      const line = /^(GET|POST|PUT|DELETE) (\S+) HTTP\/1\.1\r\n/.exec(text);
      if (line) {
        const [, method, path] = line as unknown as [string, string, string];
        const key = /\r\nidempotency-key: *([^\r\n]*)/i.exec(text);
        proxy.requests.push({ method, path, key: key ? key[1]! : null });
        const rule = rules.find((r) => r.count > 0 && method === "POST" && path === r.path);
        if (rule) {
          rule.count--;
          cutting = true;
        }
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (cutting) {
        // The server has answered (so it has done the work); the client never hears of it.
        proxy.dropped++;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const address = server.address() as net.AddressInfo;
  proxy.baseUrl = `http://127.0.0.1:${address.port}`;
  return proxy;
}

async function ledgerOf(vevee: VeveeClient, userId: string): Promise<LedgerEntry[]> {
  const entries: LedgerEntry[] = [];
  for await (const entry of vevee.ledger(userId)) entries.push(entry);
  return entries;
}

describe("retries through a connection that drops the first answer", () => {
  let server: RunningServer;
  let proxy: DroppingProxy;
  let direct: VeveeClient;

  before(async () => {
    server = await startServer();
    proxy = await startDroppingProxy(server.port);
    direct = createClient({ apiKey: SECRET_KEY, baseUrl: server.baseUrl });
  });

  after(async () => {
    await proxy?.close();
    await server?.stop();
  });

  test("a reserve whose answer is lost is retried with the same key and holds once, not twice", async () => {
    const vevee = createClient({
      apiKey: SECRET_KEY,
      baseUrl: proxy.baseUrl,
      initialRetryDelayMs: 20,
      maxRetryDelayMs: 100,
    });
    await vevee.upsertSubscription({ userId: "rita", planId: "pro" });
    const seen = proxy.requests.length;
    const dropped = proxy.dropped;
    proxy.dropNext("/v1/reservations", 1);

    const hold = await vevee.reserve("rita", GEMINI, 3);

    const keys = proxy.requests.slice(seen).map((r) => r.key);
    assert.equal(proxy.dropped - dropped, 1, "the proxy cut the first answer");
    assert.equal(keys.length, 2, "the reserve was sent twice");
    assert.ok(keys[0], "with an Idempotency-Key");
    assert.equal(keys[1], keys[0], "the same key both times");
    assert.equal(hold.allowed, true);
    assert.equal(hold.lastResponse.attempts, 2);
    assert.equal(hold.lastResponse.idempotentReplayed, true);
    assert.equal(hold.lastResponse.idempotencyKey, keys[0]);

    // One hold of 3 on the Pro counter, one usage.reserved in the ledger.
    const usage = await direct.usage("rita", "image.*");
    assert.deepEqual(
      usage.counters.map((c) => [c.limitId, c.reserved, c.used, c.remaining]),
      [["images", 3, 0, 37]],
    );
    const reserved = (await ledgerOf(direct, "rita")).filter((e) => e.type === "usage.reserved");
    assert.deepEqual(reserved.map((e) => [e.reservationId, e.amount]), [[hold.reservationId, 3]]);

    // The hold is the one the client got: committing it leaves nothing pending.
    await vevee.commit(hold.reservationId!, {});
    const after = await direct.usage("rita", "image.*");
    assert.deepEqual(
      after.counters.map((c) => [c.reserved, c.used, c.remaining]),
      [[0, 3, 37]],
    );
  });

  test("without the key, the same lost answer would have held twice", async () => {
    // The control: a fetch that strips the Idempotency-Key, as a hand-rolled client would send.
    const keyless: FetchLike = (url, init) => {
      const headers = { ...(init.headers as Record<string, string>) };
      delete headers["Idempotency-Key"];
      return fetch(url, { ...init, headers });
    };
    const vevee = createClient({
      apiKey: SECRET_KEY,
      baseUrl: proxy.baseUrl,
      initialRetryDelayMs: 20,
      fetch: keyless,
    });
    await vevee.upsertSubscription({ userId: "sam", planId: "pro" });
    proxy.dropNext("/v1/reservations", 1);
    const hold = await vevee.reserve("sam", GEMINI, 3);
    assert.equal(hold.lastResponse.attempts, 2);
    assert.equal(hold.lastResponse.idempotentReplayed, false);
    const usage = await direct.usage("sam", "image.*");
    assert.equal(usage.counters[0]!.reserved, 6, "two holds of 3");
    const reserved = (await ledgerOf(direct, "sam")).filter((e) => e.type === "usage.reserved");
    assert.equal(reserved.length, 2);
  });

  test("a commit whose answer is lost is retried and answers the same", async () => {
    const vevee = createClient({ apiKey: SECRET_KEY, baseUrl: proxy.baseUrl, initialRetryDelayMs: 20 });
    await vevee.upsertSubscription({ userId: "tom", planId: "pro" });
    const hold = await vevee.reserve("tom", GEMINI, 2);
    assert.equal(hold.allowed, true);
    proxy.dropNext(`/v1/reservations/${hold.reservationId}/commit`, 1);
    const commit = await vevee.commit(hold.reservationId!, { amount: 1 });
    assert.equal(commit.lastResponse.attempts, 2);
    assert.equal(commit.lastResponse.idempotentReplayed, true);
    assert.equal(commit.status, "committed");
    assert.equal(commit.committedAmount, 1);
    const usage = await direct.usage("tom", "image.*");
    assert.deepEqual(usage.counters.map((c) => [c.used, c.reserved]), [[1, 0]]);
  });
});

describe("retries against the server's own rate limit", () => {
  let server: RunningServer;

  before(async () => {
    server = await startServer({ serverConfig: ["sandbox_requests_per_second = 4"] });
  });

  after(async () => {
    await server?.stop();
  });

  test("429 answers are retried after Retry-After and every call lands once", async () => {
    const vevee = createClient({ apiKey: SECRET_KEY, baseUrl: server.baseUrl, maxRetries: 4 });
    await vevee.upsertSubscription({ userId: "rl", planId: "pro" });
    // Wait for a fresh second of the limit, so that the burst below surely overflows it.
    await new Promise((r) => setTimeout(r, 1100));
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 8 }, () => vevee.consume("rl", GEMINI, 1)));
    assert.ok(results.every((r) => r.allowed && r.status === "committed"));
    const retried = results.filter((r) => r.lastResponse.attempts > 1);
    assert.ok(retried.length >= 4, `${retried.length} of 8 calls were retried`);
    assert.ok(Date.now() - started >= 900, "the retries waited for Retry-After");
    const usage = await vevee.usage("rl");
    assert.equal(usage.counters[0]!.used, 8, "each call landed once");
  });
});
