// Webhooks out through the SDK against the real server: the endpoints API (create, list, get,
// update, rotate, delete, the limit of 16 and invalid input as typed errors), deliveries to a local
// receiver checked with verifyWebhook and the secrets the API gave, `events.list` with its paging and
// type filter, and pack items' lowBalanceThreshold.

import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  VeveeConflictError,
  VeveeInvalidRequestError,
  VeveeNotFoundError,
  createClient,
  verifyWebhook,
  type VeveeClient,
  type WebhookEvent,
} from "@vevee/sdk";
import { LIVE_KEY, SECRET_KEY, startServer, type RunningServer } from "./support.js";

interface Delivery {
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

/** A local receiver that answers 200 to every POST and keeps what it got. */
async function startReceiver(): Promise<{ url: string; deliveries: Delivery[]; close(): Promise<void> }> {
  const deliveries: Delivery[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      deliveries.push({ body: Buffer.concat(chunks).toString("utf8"), headers: req.headers });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/vevee`,
    deliveries,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("webhook endpoints and events against the real server", () => {
  let server: RunningServer;
  let vevee: VeveeClient;

  before(async () => {
    server = await startServer();
    vevee = createClient({ apiKey: SECRET_KEY, baseUrl: server.baseUrl });
  });

  after(async () => {
    await server?.stop();
  });

  test("create, list, get, update, rotate and delete an endpoint; the secret only on create and rotate", async () => {
    const created = await vevee.webhookEndpoints.create({
      url: "https://example.com/hooks/vevee",
      events: ["credits.low", "credits.depleted"],
      description: "top-up prompts",
    });
    assert.match(created.id, /^we_/);
    assert.match(created.secret, /^whsec_[A-Za-z0-9+/]+=*$/);
    assert.equal(created.lastResponse.status, 200);
    assert.deepEqual(
      { url: created.url, events: created.events, description: created.description, enabled: created.enabled },
      { url: "https://example.com/hooks/vevee", events: ["credits.low", "credits.depleted"], description: "top-up prompts", enabled: true },
    );
    assert.equal(typeof created.createdAt, "string");

    const { secret, ...withoutSecret } = created;
    const fetched = await vevee.webhookEndpoints.get(created.id);
    assert.deepEqual({ ...fetched }, withoutSecret);
    assert.ok(!("secret" in fetched));
    assert.deepEqual({ ...(await vevee.webhookEndpoints.retrieve(created.id)) }, withoutSecret);

    const list = await vevee.webhookEndpoints.list();
    assert.ok(list.data.some((e) => e.id === created.id));
    assert.ok(list.data.every((e) => !("secret" in e)));

    const updated = await vevee.webhookEndpoints.update(created.id, { enabled: false, events: ["*"] });
    assert.deepEqual(
      { events: updated.events, enabled: updated.enabled, url: updated.url, description: updated.description },
      { events: ["*"], enabled: false, url: created.url, description: "top-up prompts" },
    );
    const cleared = await vevee.webhookEndpoints.update(created.id, { description: null, url: "http://example.com/v2" });
    assert.equal(cleared.description, null);
    assert.equal(cleared.url, "http://example.com/v2");
    assert.equal(cleared.enabled, false, "a field not given stays as it was");

    const rotated = await vevee.webhookEndpoints.rotateSecret(created.id);
    assert.equal(rotated.id, created.id);
    assert.match(rotated.secret, /^whsec_/);
    assert.notEqual(rotated.secret, secret);

    const deleted = await vevee.webhookEndpoints.delete(created.id);
    assert.deepEqual({ ...deleted }, { id: created.id, deleted: true });
    await assert.rejects(vevee.webhookEndpoints.get(created.id), (error: unknown) => {
      assert.ok(error instanceof VeveeNotFoundError);
      assert.equal(error.code, "endpoint_not_found");
      return true;
    });
    await assert.rejects(vevee.webhookEndpoints.delete(created.id), VeveeNotFoundError);
  });

  test("invalid input is a VeveeInvalidRequestError naming the field", async () => {
    await assert.rejects(
      vevee.webhookEndpoints.create({ url: "ftp://example.com/hooks", events: ["*"] }),
      (error: unknown) => {
        assert.ok(error instanceof VeveeInvalidRequestError);
        assert.equal(error.status, 400);
        assert.equal(error.type, "invalid_request");
        assert.equal(error.param, "url");
        assert.equal(typeof error.code, "string");
        return true;
      },
    );
    await assert.rejects(
      vevee.webhookEndpoints.create({ url: `https://example.com/${"a".repeat(2048)}`, events: ["*"] }),
      { name: "VeveeInvalidRequestError", param: "url" },
    );
    await assert.rejects(
      // A type this SDK does not know, as a caller without types could send it.
      vevee.webhookEndpoints.create({ url: "https://example.com/h", events: ["credits.lo" as "credits.low"] }),
      { name: "VeveeInvalidRequestError", param: "events" },
    );
    await assert.rejects(vevee.events.list({ limit: 0 }), { name: "VeveeInvalidRequestError", param: "limit" });
    await assert.rejects(vevee.events.list({ startingAfter: "evt_nope" }), {
      name: "VeveeInvalidRequestError",
      param: "startingAfter",
    });
  });

  test("a 17th endpoint in a mode is a VeveeConflictError too_many_endpoints; the other mode has its own 16", async () => {
    const existing = (await vevee.webhookEndpoints.list()).data.length;
    const made: string[] = [];
    for (let i = existing; i < 16; i++) {
      made.push((await vevee.webhookEndpoints.create({ url: `https://example.com/hooks/${i}`, events: ["*"] })).id);
    }
    assert.equal((await vevee.webhookEndpoints.list()).data.length, 16);
    await assert.rejects(
      vevee.webhookEndpoints.create({ url: "https://example.com/hooks/17", events: ["*"] }),
      (error: unknown) => {
        assert.ok(error instanceof VeveeConflictError);
        assert.equal(error.status, 409);
        assert.equal(error.code, "too_many_endpoints");
        return true;
      },
    );
    const live = createClient({ apiKey: LIVE_KEY, baseUrl: server.baseUrl });
    const liveEndpoint = await live.webhookEndpoints.create({ url: "https://example.com/live", events: ["*"] });
    assert.ok(!(await vevee.webhookEndpoints.list()).data.some((e) => e.id === liveEndpoint.id));
    await live.webhookEndpoints.delete(liveEndpoint.id);

    for (const id of made) await vevee.webhookEndpoints.delete(id);
    assert.equal((await vevee.webhookEndpoints.list()).data.length, existing);
  });

  test("events.list after a grant shows credits.granted with the Balance; pages with startingAfter and filters by type", async () => {
    const grant = await vevee.credits.grant({
      userId: "ev_ana",
      packId: "cpk_creator_bundle",
      externalRef: "ev-1",
      source: "grant",
    });
    await vevee.upsertSubscription("ev_ana", "pro");

    const granted = await vevee.events.list({ type: "credits.granted", limit: 100 });
    const ours = granted.data.filter(
      (e): e is WebhookEvent<"credits.granted"> => e.type === "credits.granted" && e.data.userId === "ev_ana",
    );
    assert.deepEqual(
      ours.map((e) => e.data.id).sort(),
      grant.balances.map((b) => b.id).sort(),
      "one credits.granted per balance",
    );
    for (const event of ours) {
      assert.match(event.id, /^evt_/);
      assert.equal(event.mode, "test");
      const balance = grant.balances.find((b) => b.id === event.data.id)!;
      assert.deepEqual(
        [event.data.packId, event.data.packItemId, event.data.granted, event.data.remaining, event.data.externalRef],
        [balance.packId, balance.packItemId, balance.granted, balance.remaining, "ev-1"],
      );
    }
    assert.ok(granted.data.every((e) => e.type === "credits.granted"));

    const all = await vevee.events.list({ limit: 100 });
    assert.ok(all.data.some((e) => e.type === "subscription.updated" && e.data.userId === "ev_ana"));
    const times = all.data.map((e) => e.createdAt);
    assert.deepEqual(times, [...times].sort().reverse(), "newest first");

    // One event per page: every page follows the previous one's last id, and together they are
    // the single page of 100 (nothing else happens on this server meanwhile).
    const first = await vevee.events.list({ limit: 1 });
    assert.equal(first.data.length, 1);
    assert.equal(first.hasMore, true);
    const second = await vevee.events.list({ limit: 1, startingAfter: first.data[0]!.id });
    assert.equal(second.data[0]!.id, all.data[1]!.id);
    const walked: string[] = [];
    for await (const event of vevee.events.list({ limit: 2 })) walked.push(event.id);
    assert.deepEqual(walked, all.data.map((e) => e.id));
    const grantedWalked: string[] = [];
    for await (const event of vevee.events.list({ limit: 1, type: "credits.granted" })) grantedWalked.push(event.id);
    assert.deepEqual(grantedWalked, granted.data.map((e) => e.id));

    // The key's mode only: a live key sees none of the test-mode events.
    const live = createClient({ apiKey: LIVE_KEY, baseUrl: server.baseUrl });
    assert.ok(!(await live.events.list()).data.some((e) => all.data.some((t) => t.id === e.id)));
  });

  test("pack items round-trip lowBalanceThreshold, and a balance crossing it sends credits.low", async () => {
    const pack = await vevee.creditPacks.create({
      id: "cpk_low_alert",
      name: "Low alert",
      expiresInDays: null,
      items: [
        { id: "img", match: "image.dall-e-3", amount: 5, unit: "count", lowBalanceThreshold: 2 },
        { id: "vid", match: "video.veo-3", amount: 5, unit: "seconds" },
      ],
    });
    assert.deepEqual(
      pack.items.map((i) => [i.id, i.lowBalanceThreshold]),
      [["img", 2], ["vid", null]],
    );
    assert.equal((await vevee.creditPacks.get(pack.id)).items[0]!.lowBalanceThreshold, 2);
    // A pack read back can be written back as it is; the threshold can change and be removed.
    const edited = await vevee.creditPacks.upsert({
      ...pack,
      items: pack.items.map((i) => (i.id === "img" ? { ...i, lowBalanceThreshold: 3 } : { ...i, lowBalanceThreshold: null })),
    });
    assert.deepEqual(edited.items.map((i) => i.lowBalanceThreshold), [3, null]);
    await assert.rejects(
      vevee.creditPacks.upsert({ ...pack, items: [{ match: "image.dall-e-3", amount: 5, unit: "count", lowBalanceThreshold: 6 }] }),
      VeveeInvalidRequestError,
    );

    const { balances } = await vevee.credits.grant({ userId: "low_bo", packId: pack.id, externalRef: "low-1", source: "grant" });
    const image = balances.find((b) => b.packItemId === "img")!;
    await vevee.consume("low_bo", "image.dall-e-3", 2);
    const low = await vevee.events.list({ type: "credits.low" });
    const lows = low.data.filter((e) => e.type === "credits.low" && e.data.id === image.id);
    assert.equal(lows.length, 1);
    assert.equal(lows[0]!.type === "credits.low" && lows[0]!.data.remaining, 3);
  });

  test("deliveries to an endpoint verify with its secret, and with either secret after a rotation", async () => {
    const receiver = await startReceiver();
    try {
      const endpoint = await vevee.webhookEndpoints.create({ url: receiver.url, events: ["credits.granted"] });
      await vevee.credits.grant({ userId: "hook_cy", packId: "cpk_gemini_topup", externalRef: "hook-1", source: "grant" });
      // Only this grant's: the receiver may also get events from before the endpoint existed
      // (the server matches events to endpoints when it sends them).
      const ofGrant = (ref: string) => receiver.deliveries.find((d) => d.body.includes(`"externalRef":"${ref}"`));
      const first = await waitFor("a delivery", () => ofGrant("hook-1"));
      const event = await verifyWebhook(first.body, first.headers, endpoint.secret);
      assert.equal(event.type, "credits.granted");
      assert.equal(event.type === "credits.granted" && event.data.userId, "hook_cy");
      assert.equal(first.headers["webhook-id"], event.id);
      const polled = await vevee.events.list({ type: "credits.granted", limit: 100 });
      assert.deepEqual(polled.data.find((e) => e.id === event.id), event, "polling gives the delivered event");

      const rotated = await vevee.webhookEndpoints.rotateSecret(endpoint.id);
      await vevee.credits.grant({ userId: "hook_cy", packId: "cpk_gemini_topup", externalRef: "hook-2", source: "grant" });
      const second = await waitFor("a second delivery", () => ofGrant("hook-2"));
      assert.equal(String(second.headers["webhook-signature"]).split(" ").length, 2, "both secrets sign for 24 h");
      assert.equal((await verifyWebhook(second.body, second.headers, rotated.secret)).id, second.headers["webhook-id"]);
      assert.equal((await verifyWebhook(second.body, second.headers, endpoint.secret)).id, second.headers["webhook-id"]);
      await vevee.webhookEndpoints.delete(endpoint.id);
    } finally {
      await receiver.close();
    }
  });
});
