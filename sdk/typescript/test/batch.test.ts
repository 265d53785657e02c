// `vevee.batch([...])` and automatic batching against the real server. A counting HTTP proxy in
// front of the server shows how many requests the calls really took.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import {
  VeveeConfigurationError,
  VeveeConflictError,
  VeveeInvalidRequestError,
  VeveeNotFoundError,
  createClient,
  type Reservation,
  type VeveeClient,
} from "@vevee/sdk";
import { SECRET_KEY, startServer, type RunningServer } from "./support.js";

const GEMINI = "image.gemini-3-1-flash-image-preview";

interface CountingProxy {
  baseUrl: string;
  /** Paths of the requests that went through, in order. */
  paths: string[];
  close(): Promise<void>;
}

async function startCountingProxy(upstreamPort: number): Promise<CountingProxy> {
  const paths: string[] = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const server = http.createServer((req, res) => {
    paths.push(req.url ?? "");
    const upstream = http.request(
      { host: "127.0.0.1", port: upstreamPort, method: req.method, path: req.url, headers: req.headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no proxy port");
  return {
    baseUrl: `http://127.0.0.1:${address.port}`,
    paths,
    close: () =>
      new Promise((resolve) => {
        agent.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("batch", () => {
  let server: RunningServer;
  let proxy: CountingProxy;
  let vevee: VeveeClient;

  before(async () => {
    server = await startServer();
    proxy = await startCountingProxy(server.port);
    vevee = createClient({ apiKey: SECRET_KEY, baseUrl: server.baseUrl });
  });

  after(async () => {
    await proxy?.close();
    await server?.stop();
  });

  test("vevee.batch answers one result per operation, each what the single call answers", async () => {
    await vevee.credits.grant({ userId: "bea", packId: "cpk_gemini_topup", externalRef: "cs_bea", source: "grant" });
    const held = await vevee.reserve("bea", GEMINI, 2);
    assert.ok(held.allowed);
    const answer = await vevee.batch([
      { op: "reserve", userId: "bea", model: GEMINI, amount: 1, metadata: { job: "a" } },
      { op: "commit", reservationId: held.reservationId, amount: 1 },
      { op: "release", reservationId: held.reservationId },
      { op: "consume", userId: "bea", model: GEMINI, amount: 0 },
      { op: "check", userId: "bea", model: GEMINI, amount: 100 },
    ]);
    assert.equal(answer.lastResponse.status, 200);
    assert.deepEqual(
      answer.results.map((r) => r.status),
      [200, 200, 409, 400, 200],
    );
    const [reserved, committed, refused, invalid, check] = answer.results.map((r) => r.body as any);
    assert.equal(reserved.allowed, true);
    assert.deepEqual(reserved.metadata, { job: "a" });
    assert.equal(committed.committedAmount, 1);
    assert.equal(refused.error.code, "reservation_not_pending");
    assert.equal(invalid.error.param, "amount");
    assert.equal(check.allowed, false);
    // The same as the single call.
    const single = await vevee.getReservation(held.reservationId);
    assert.deepEqual({ ...single }, committed);
  });

  test("500 concurrent reserves with automatic batching: each its own reservation, far fewer requests", async () => {
    const users = Array.from({ length: 10 }, (_, i) => `ana_${i}`);
    for (const userId of users) {
      await vevee.credits.grant({ userId, packId: "cpk_gemini_topup", externalRef: "cs_ana", source: "grant" });
    }
    const batching = createClient({
      apiKey: SECRET_KEY,
      baseUrl: proxy.baseUrl,
      batch: { maxOperations: 100, maxDelayMs: 5 },
    });
    const seen = proxy.paths.length;
    // 48 of the 50 credits of each of 10 users, and 20 calls for a user who has nothing.
    const calls = [
      ...Array.from({ length: 480 }, (_, i) => ({ userId: users[i % 10]!, expect: "allowed" })),
      ...Array.from({ length: 20 }, () => ({ userId: "broke", expect: "denied" })),
    ];
    const results = await Promise.all(calls.map((c) => batching.reserve(c.userId, GEMINI, 1)));
    const requests = proxy.paths.slice(seen);

    const ids = new Set<string>();
    results.forEach((r, i) => {
      const call = calls[i]!;
      if (call.expect === "allowed") {
        assert.ok(r.allowed, `call ${i}: ${JSON.stringify(r)}`);
        assert.equal(r.userId, call.userId, "each caller gets the reservation of its own call");
        assert.equal(r.status, "pending");
        assert.equal(r.lastResponse.status, 200);
        ids.add(r.reservationId);
      } else {
        assert.equal(r.allowed, false, `call ${i}`);
        assert.deepEqual(r.reasons, ["no_subscription", "credits_exhausted"]);
      }
    });
    assert.equal(ids.size, 480, "480 different reservations");
    assert.ok(requests.every((p) => p === "/v1/batch"), `only batches: ${requests.join(" ")}`);
    assert.ok(requests.length >= 5 && requests.length <= 25, `${requests.length} requests for 500 calls`);
    for (const userId of users) {
      const usage = await vevee.usage(userId);
      assert.equal(usage.credits[0]!.reserved, 48, userId);
    }
  });

  test("a denial or an error of one batched call reaches only its caller, as the single call's error class", async () => {
    await vevee.credits.grant({ userId: "cai", packId: "cpk_gemini_topup", externalRef: "cs_cai", source: "grant" });
    const held = await vevee.reserve("cai", GEMINI, 1);
    assert.ok(held.allowed);
    await vevee.release(held.reservationId);
    const batching = createClient({ apiKey: SECRET_KEY, baseUrl: proxy.baseUrl, batch: { maxDelayMs: 20 } });
    const seen = proxy.paths.length;
    const settled = await Promise.allSettled([
      batching.reserve("cai", GEMINI, 1),
      batching.reserve("cai", "Not A Model", 1),
      batching.consume("cai", GEMINI, 1000),
      batching.commit("res_unknown"),
      batching.commit(held.reservationId),
      batching.check("cai", GEMINI, 1),
      batching.consume("cai", GEMINI, 2),
    ]);
    assert.deepEqual(proxy.paths.slice(seen), ["/v1/batch"], "one request for all seven calls");
    const [ok, badModel, denied, unknown, notPending, check, consumed] = settled;
    assert.equal(ok!.status, "fulfilled");
    const reservation = (ok as PromiseFulfilledResult<Reservation>).value;
    assert.equal(reservation.allowed, true);
    assert.equal(badModel!.status, "rejected");
    const invalid = (badModel as PromiseRejectedResult).reason;
    assert.ok(invalid instanceof VeveeInvalidRequestError);
    assert.equal(invalid.status, 400);
    assert.equal(invalid.param, "model");
    assert.equal(denied!.status, "fulfilled");
    assert.equal((denied as PromiseFulfilledResult<{ allowed: boolean }>).value.allowed, false);
    const notFound = (unknown as PromiseRejectedResult).reason;
    assert.ok(notFound instanceof VeveeNotFoundError);
    assert.equal(notFound.code, "reservation_not_found");
    const conflict = (notPending as PromiseRejectedResult).reason;
    assert.ok(conflict instanceof VeveeConflictError);
    assert.equal(conflict.code, "reservation_not_pending");
    assert.equal((check as PromiseFulfilledResult<{ allowed: boolean }>).value.allowed, true);
    const spent = (consumed as PromiseFulfilledResult<Reservation>).value;
    assert.equal(spent.status, "committed");
    const usage = await vevee.usage("cai");
    assert.deepEqual([usage.credits[0]!.remaining, usage.credits[0]!.reserved], [47, 1]);
  });

  test("a call with its own options goes alone; a bad batch option is refused at once", async () => {
    const batching = createClient({ apiKey: SECRET_KEY, baseUrl: proxy.baseUrl, batch: true });
    const seen = proxy.paths.length;
    const r = await batching.reserve("dan", GEMINI, 1, { idempotencyKey: "dan-job-1" });
    assert.equal(r.allowed, false);
    assert.equal(r.lastResponse.idempotencyKey, "dan-job-1");
    assert.deepEqual(proxy.paths.slice(seen), ["/v1/reservations"]);
    assert.throws(
      () => createClient({ apiKey: SECRET_KEY, batch: { maxOperations: 1001 } }),
      VeveeConfigurationError,
    );
  });
});
