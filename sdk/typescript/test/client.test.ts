// The rest of API.md through the SDK against the real server (errors, catalog, ledger pages, the test
// clock, idempotency), and the retry policy and browser guard against a scripted fetch.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  VeveeAuthenticationError,
  VeveeConfigurationError,
  VeveeConflictError,
  VeveeConnectionError,
  VeveeError,
  VeveeInternalError,
  VeveeInvalidRequestError,
  VeveeNotFoundError,
  VeveePermissionError,
  VeveeRateLimitError,
  VeveeTimeoutError,
  backoffMs,
  createClient,
  parseRetryAfter,
  type FetchLike,
  type LedgerEntry,
  type VeveeClient,
} from "@vevee/sdk";
import { freePort, LIVE_KEY, PUBLISHABLE_KEY, SECRET_KEY, startServer, type RunningServer } from "./support.js";

const GEMINI = "image.gemini-3-1-flash-image-preview";

describe("the rest of the API against the real server", () => {
  let server: RunningServer;
  let vevee: VeveeClient;

  before(async () => {
    server = await startServer();
    vevee = createClient({ apiKey: SECRET_KEY, baseUrl: server.baseUrl });
  });

  after(async () => {
    await server?.stop();
  });

  test("the seeded catalog reads with a publishable key, which may do nothing else", async () => {
    const browser = createClient({ apiKey: PUBLISHABLE_KEY, baseUrl: server.baseUrl });
    const plans = await browser.plans.list();
    assert.equal(plans.hasMore, false);
    assert.deepEqual(plans.data.map((p) => p.id).sort(), ["free", "pro"]);
    const free = await browser.plans.get("free");
    assert.deepEqual(free.price, { amount: 0, currency: "usd", interval: null });
    assert.deepEqual(free.limits, [
      { id: "images", name: "Images", match: [GEMINI], limit: 2, unit: "count", period: "lifetime" },
    ]);
    const bundle = await browser.creditPacks.get("cpk_creator_bundle");
    assert.equal(bundle.expiresInDays, 90);
    assert.deepEqual(
      bundle.items.map((i) => [i.id, i.match, i.amount, i.unit]),
      [
        ["dalle", "image.dall-e-3", 10, "count"],
        ["veo", "video.veo-3", 5, "seconds"],
      ],
    );
    assert.equal((await browser.creditPacks.get("cpk_gemini_topup")).expiresInDays, null);

    await assert.rejects(browser.reserve("eve", GEMINI, 1), (error: unknown) => {
      assert.ok(error instanceof VeveePermissionError);
      assert.ok(error instanceof VeveeError);
      assert.equal(error.status, 403);
      assert.equal(error.type, "permission");
      assert.equal(typeof error.code, "string");
      return true;
    });
  });

  test("API refusals are VeveeError subclasses with status, type, code, param and message", async () => {
    await assert.rejects(vevee.reserve("eve", "NOT A MODEL", 1), (error: unknown) => {
      assert.ok(error instanceof VeveeInvalidRequestError);
      assert.equal(error.status, 400);
      assert.equal(error.type, "invalid_request");
      assert.equal(error.param, "model");
      assert.ok(error.message.length > 0);
      return true;
    });
    await assert.rejects(vevee.getReservation("res_nope"), VeveeNotFoundError);
    await assert.rejects(vevee.getSubscription("never-subscribed"), {
      name: "VeveeNotFoundError",
      code: "no_subscription",
    });
    await assert.rejects(vevee.upsertSubscription("eve", "platinum"), { code: "plan_not_found" });
    await assert.rejects(vevee.ledger("eve", { limit: 501 }), { status: 400, param: "limit" });

    const bad = createClient({ apiKey: "sk_test_wrong", baseUrl: server.baseUrl });
    await assert.rejects(bad.usage("eve"), VeveeAuthenticationError);
    const live = createClient({ apiKey: LIVE_KEY, baseUrl: server.baseUrl });
    await assert.rejects(live.testClock.get(), VeveePermissionError);

    await vevee.upsertSubscription("eve", "pro");
    const hold = await vevee.reserve("eve", GEMINI, 2);
    assert.equal(hold.allowed, true);
    await assert.rejects(vevee.commit(hold.reservationId!, { amount: 3 }), { code: "invalid_amount" });
    await vevee.release(hold.reservationId!);
    await assert.rejects(vevee.commit(hold.reservationId!), (error: unknown) => {
      assert.ok(error instanceof VeveeConflictError);
      assert.equal(error.status, 409);
      assert.equal(error.code, "reservation_not_pending");
      return true;
    });
  });

  test("reserve, check and consume take positional arguments or one object, and a denial is a value", async () => {
    await vevee.upsertSubscription({ userId: "fay", planId: "free" });
    const check = await vevee.check({ userId: "fay", model: GEMINI, amount: 2 });
    assert.deepEqual(
      { allowed: check.allowed, reasons: check.reasons, available: check.available },
      { allowed: true, reasons: [], available: { plan: 2, credits: 0 } },
    );
    assert.deepEqual(check.allocations, [{ source: "plan", limitId: "images", balanceId: null, amount: 2 }]);

    const hold = await vevee.reserve(
      { userId: "fay", model: GEMINI, amount: 1, ttlSeconds: 60, metadata: { prompt: "a fox" } },
    );
    assert.equal(hold.allowed, true);
    assert.deepEqual(hold.metadata, { prompt: "a fox" });
    assert.equal(hold.status, "pending");
    assert.equal(hold.committedAmount, null);

    const consumed = await vevee.consume("fay", GEMINI, 1, { metadata: { via: "consume" } });
    assert.equal(consumed.allowed, true);
    assert.equal(consumed.status, "committed");

    const denied = await vevee.reserve("fay", GEMINI, 1);
    assert.deepEqual(denied, {
      reservationId: null,
      allowed: false,
      reasons: ["plan_exhausted"],
      available: { plan: 0, credits: 0 },
    });
    const notInPlan = await vevee.canUse("fay", "image.dall-e-3", 1);
    assert.deepEqual(notInPlan.reasons, ["not_in_plan"]);
  });

  test("the test clock expires a pending reservation at its TTL", async () => {
    await vevee.upsertSubscription({ userId: "gil", planId: "pro" });
    const hold = await vevee.reserve("gil", GEMINI, 4, { ttlSeconds: 60 });
    assert.equal(hold.allowed, true);
    const before = await vevee.testClock.get();
    const after = await vevee.testClock.advance(61);
    assert.ok(Date.parse(after.now) - Date.parse(before.now) >= 61_000);
    assert.equal((await vevee.getReservation(hold.reservationId!)).status, "expired");
    const usage = await vevee.usage("gil");
    assert.equal(usage.counters[0]!.reserved, 0);
    await vevee.testClock.advance({ seconds: 1 });
  });

  test("the ledger is a page, and `for await` walks every page", async () => {
    await vevee.upsertSubscription({ userId: "hal", planId: "pro" });
    for (let i = 0; i < 6; i++) await vevee.consume("hal", GEMINI, 1);
    // 1 subscription.updated + 6 × (usage.reserved + usage.committed).
    const page = await vevee.ledger("hal", { limit: 5 });
    assert.equal(page.data.length, 5);
    assert.equal(page.hasMore, true);
    const all: LedgerEntry[] = [];
    for await (const entry of vevee.ledger("hal", { limit: 5 })) all.push(entry);
    assert.equal(all.length, 13);
    assert.deepEqual(all.slice(0, 5), page.data);
    assert.equal(new Set(all.map((e) => e.id)).size, 13);
    assert.equal(all.at(-1)!.type, "subscription.updated");
    // Newest first: each consume's usage.committed comes before its usage.reserved.
    for (let i = 1; i < all.length; i++) assert.ok(Date.parse(all[i - 1]!.at) >= Date.parse(all[i]!.at));
    assert.deepEqual(
      all.slice(0, 12).map((e) => e.type),
      Array.from({ length: 6 }, () => ["usage.committed", "usage.reserved"]).flat(),
    );
    const rest = await vevee.ledger("hal", { limit: 50, startingAfter: page.data[4]!.id });
    assert.deepEqual(rest.data, all.slice(5));
    assert.equal(rest.hasMore, false);
  });

  test("plans and credit packs: create, replace, archive, delete", async () => {
    const plan = await vevee.plans.create({
      id: "studio",
      name: "Studio",
      price: { amount: 2900, currency: "usd", interval: "month" },
      limits: [{ id: "video", name: "Video", match: ["video.*"], limit: 60, unit: "seconds", period: "month" }],
    });
    assert.equal(plan.lastResponse.status, 201);
    assert.equal(plan.id, "studio");
    await assert.rejects(
      vevee.plans.create({ id: "studio", name: "Studio" }),
      { name: "VeveeConflictError", code: "plan_exists" },
    );
    const replaced = await vevee.plans.upsert({ ...plan, name: "Studio+", limits: plan.limits.map((l) => ({ ...l, limit: 90 })) });
    assert.equal(replaced.name, "Studio+");
    assert.equal(replaced.limits[0]!.limit, 90);
    await vevee.upsertSubscription("ivy", "studio");
    await assert.rejects(vevee.plans.delete("studio"), { code: "plan_in_use" });
    await vevee.cancelSubscription("ivy");
    assert.deepEqual({ ...(await vevee.plans.delete("studio")) }, { id: "studio", deleted: true });

    const pack = await vevee.creditPacks.create({
      id: "cpk_video_minute",
      name: "A minute of video",
      price: { amount: 900, currency: "usd" },
      expiresInDays: 30,
      items: [{ match: "video.*", amount: 60, unit: "seconds" }],
    });
    assert.equal(pack.archived, false);
    assert.equal(typeof pack.items[0]!.id, "string");
    const renamed = await vevee.creditPacks.upsert({ ...pack, name: "One minute of video", stripePriceId: "price_1" });
    assert.equal(renamed.stripePriceId, "price_1");
    const archived = await vevee.creditPacks.archive(pack.id);
    assert.equal(archived.archived, true);
    const listed = await vevee.creditPacks.list();
    assert.ok(!listed.data.some((p) => p.id === pack.id));
    const withArchived = await vevee.creditPacks.list({ includeArchived: true });
    assert.ok(withArchived.data.some((p) => p.id === pack.id));
    const grant = await vevee.credits.grant({
      userId: "ivy",
      packId: pack.id,
      externalRef: "support-42",
      source: "grant",
      notes: "sorry about the outage",
      expiresAt: new Date(Date.parse((await vevee.testClock.get()).now) + 86_400_000),
    });
    assert.equal(grant.created, true);
    assert.equal(grant.balances[0]!.notes, "sorry about the outage");
  });

  test("one Idempotency-Key per logical call: new calls hold anew, a given key replays", async () => {
    await vevee.upsertSubscription("jo", "pro");
    const a = await vevee.reserve("jo", GEMINI, 1);
    const b = await vevee.reserve("jo", GEMINI, 1);
    assert.notEqual(a.lastResponse.idempotencyKey, b.lastResponse.idempotencyKey);
    assert.notEqual(a.reservationId, b.reservationId);

    const first = await vevee.reserve("jo", GEMINI, 1, { idempotencyKey: "job-7" });
    const again = await vevee.reserve("jo", GEMINI, 1, { idempotencyKey: "job-7" });
    assert.equal(first.lastResponse.idempotentReplayed, false);
    assert.equal(again.lastResponse.idempotentReplayed, true);
    assert.equal(again.reservationId, first.reservationId);
    await assert.rejects(vevee.reserve("jo", GEMINI, 2, { idempotencyKey: "job-7" }), {
      name: "VeveeConflictError",
      code: "idempotency_key_reused",
    });
    assert.equal((await vevee.usage("jo")).counters[0]!.reserved, 3);
  });

  test("an unreachable server is a VeveeConnectionError, not an API refusal", async () => {
    const port = await freePort();
    const nowhere = createClient({
      apiKey: SECRET_KEY,
      baseUrl: `http://127.0.0.1:${port}`,
      maxRetries: 1,
      initialRetryDelayMs: 5,
    });
    await assert.rejects(nowhere.usage("kim"), (error: unknown) => {
      assert.ok(error instanceof VeveeConnectionError);
      assert.equal(error.status, null);
      assert.equal(error.type, "connection");
      assert.match(error.message, /could not reach vevee .*2 attempts/);
      return true;
    });
  });
});

// ---------------------------------------------------------------------------------------------
// The retry policy, against a scripted fetch.

interface Script {
  fetch: FetchLike;
  calls: Array<{ url: string; method: string; key: string | null; body: string | undefined; at: number }>;
}

function scripted(answers: Array<Response | Error | "hang">): Script {
  const calls: Script["calls"] = [];
  return {
    calls,
    fetch: async (url, init) => {
      const headers = init.headers as Record<string, string>;
      calls.push({
        url,
        method: init.method ?? "GET",
        key: headers["Idempotency-Key"] ?? null,
        body: init.body as string | undefined,
        at: Date.now(),
      });
      const answer = answers.shift();
      if (answer === undefined) throw new Error("script ran out");
      if (answer === "hang") {
        return new Promise<Response>((_, reject) => {
          init.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
        });
      }
      if (answer instanceof Error) throw answer;
      return answer;
    },
  };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

const apiError = (type: string, code: string) => ({ error: { type, code, message: code, param: null } });
const DENIAL = { reservationId: null, allowed: false, reasons: ["no_subscription", "credits_exhausted"], available: { plan: 0, credits: 0 } };

describe("retries", () => {
  const fast = { apiKey: SECRET_KEY, baseUrl: "http://vevee.test", initialRetryDelayMs: 1, maxRetryDelayMs: 4 };

  test("5xx and network failures are retried with the same key and the same body", async () => {
    const script = scripted([
      json(500, apiError("internal", "internal_error")),
      new TypeError("fetch failed"),
      json(503, apiError("internal", "overloaded")),
      json(200, DENIAL, { "request-id": "req_1" }),
    ]);
    const vevee = createClient({ ...fast, maxRetries: 3, fetch: script.fetch });
    const result = await vevee.reserve("u", GEMINI, 1);
    assert.equal(result.allowed, false);
    assert.equal(result.lastResponse.attempts, 4);
    assert.equal(result.lastResponse.requestId, "req_1");
    assert.equal(script.calls.length, 4);
    assert.equal(new Set(script.calls.map((c) => c.key)).size, 1);
    assert.match(script.calls[0]!.key!, /^vv_[0-9a-f-]{32,36}$/);
    assert.equal(new Set(script.calls.map((c) => c.body)).size, 1);
    assert.deepEqual(JSON.parse(script.calls[0]!.body!), { userId: "u", model: GEMINI, amount: 1 });
    assert.equal(script.calls[0]!.url, "http://vevee.test/v1/reservations");
  });

  test("two logical calls carry two keys; GET carries none", async () => {
    const script = scripted([json(200, DENIAL), json(200, DENIAL), json(200, { now: "2026-01-01T00:00:00Z" })]);
    const vevee = createClient({ ...fast, fetch: script.fetch });
    await vevee.reserve("u", GEMINI, 1);
    await vevee.reserve("u", GEMINI, 1);
    await vevee.testClock.get();
    const [a, b, c] = script.calls;
    assert.ok(a!.key && b!.key && a!.key !== b!.key);
    assert.equal(c!.key, null);
    assert.equal(c!.method, "GET");
  });

  test("429 waits for Retry-After", async () => {
    const script = scripted([
      json(429, apiError("rate_limited", "rate_limited"), { "retry-after": "1" }),
      json(200, DENIAL),
    ]);
    const vevee = createClient({ ...fast, fetch: script.fetch });
    await vevee.check("u", GEMINI, 1);
    const waited = script.calls[1]!.at - script.calls[0]!.at;
    assert.ok(waited >= 950, `waited ${waited} ms`);
  });

  test("a Retry-After beyond maxRetryAfterMs is not waited for", async () => {
    const script = scripted([json(429, apiError("rate_limited", "rate_limited"), { "retry-after": "120" })]);
    const vevee = createClient({ ...fast, fetch: script.fetch });
    await assert.rejects(vevee.usage("u"), (error: unknown) => {
      assert.ok(error instanceof VeveeRateLimitError);
      assert.equal(error.retryAfterMs, 120_000);
      return true;
    });
    assert.equal(script.calls.length, 1);
  });

  test("409 idempotency_key_in_use is retried; other 4xx are not", async () => {
    const script = scripted([
      json(409, apiError("conflict", "idempotency_key_in_use")),
      json(200, DENIAL),
      json(409, apiError("conflict", "reservation_not_pending")),
    ]);
    const vevee = createClient({ ...fast, fetch: script.fetch });
    assert.equal((await vevee.reserve("u", GEMINI, 1)).lastResponse.attempts, 2);
    await assert.rejects(vevee.commit("res_1"), { code: "reservation_not_pending" });
    assert.equal(script.calls.length, 3);
  });

  test("after maxRetries the last answer's error is raised", async () => {
    const script = scripted([
      json(500, apiError("internal", "internal_error")),
      new Response("<html>bad gateway</html>", { status: 502, headers: { "content-type": "text/html" } }),
    ]);
    const vevee = createClient({ ...fast, maxRetries: 1, fetch: script.fetch });
    await assert.rejects(vevee.usage("u"), (error: unknown) => {
      assert.ok(error instanceof VeveeInternalError);
      assert.equal(error.status, 502);
      return true;
    });
  });

  test("no answer within timeoutMs is a VeveeTimeoutError, retried like a network failure", async () => {
    const script = scripted(["hang", "hang"]);
    const vevee = createClient({ ...fast, timeoutMs: 30, maxRetries: 1, fetch: script.fetch });
    await assert.rejects(vevee.reserve("u", GEMINI, 1), (error: unknown) => {
      assert.ok(error instanceof VeveeTimeoutError);
      assert.ok(error instanceof VeveeConnectionError);
      assert.equal(error.status, null);
      return true;
    });
    assert.equal(script.calls.length, 2);
    assert.equal(script.calls[0]!.key, script.calls[1]!.key);
  });

  test("the backoff is exponential, capped and jittered", () => {
    assert.equal(backoffMs(0, 500, 8000, () => 0), 250);
    assert.equal(backoffMs(0, 500, 8000, () => 1), 500);
    assert.equal(backoffMs(3, 500, 8000, () => 1), 4000);
    assert.equal(backoffMs(10, 500, 8000, () => 1), 8000);
    assert.equal(backoffMs(10, 500, 8000, () => 0), 4000);
    assert.equal(parseRetryAfter("2"), 2000);
    assert.equal(parseRetryAfter(null), null);
    assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT", Date.parse("Wed, 21 Oct 2015 07:27:58 GMT")), 2000);
    assert.equal(parseRetryAfter("soon"), null);
  });
});

describe("in a browser", () => {
  test("a secret key is refused; a publishable key works", async () => {
    const g = globalThis as { window?: unknown };
    g.window = { document: {} };
    try {
      assert.throws(() => createClient({ apiKey: SECRET_KEY }), (error: unknown) => {
        assert.ok(error instanceof VeveeConfigurationError);
        assert.equal(error.code, "secret_key_in_browser");
        assert.match(error.message, /secret key in a browser/);
        assert.match(error.message, /publishable key/);
        return true;
      });
      assert.throws(() => createClient({ apiKey: "sk_live_abc" }), VeveeConfigurationError);
      const script = scripted([json(200, { data: [], hasMore: false })]);
      const vevee = createClient({ apiKey: PUBLISHABLE_KEY, baseUrl: "http://vevee.test", fetch: script.fetch });
      assert.deepEqual({ ...(await vevee.plans.list()) }, { data: [], hasMore: false });
    } finally {
      delete g.window;
    }
    assert.doesNotThrow(() => createClient({ apiKey: SECRET_KEY }));
  });
});
