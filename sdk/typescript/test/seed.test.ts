// The walkthrough's steps 4 to 7, run by PixelForge's backend (test/app.ts) through the SDK against
// the real vevee binary. Only the model provider, the UI and the app's purchase store are stubs.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createClient, type LedgerEntry, type VeveeClient } from "@vevee/sdk";
import { pixelForge, type ImageProvider, type Purchases, type Ui } from "./app.js";
import { SECRET_KEY, startServer, type RunningServer } from "./support.js";

const GEMINI = "image.gemini-3-1-flash-image-preview";
const DALLE = "image.dall-e-3";

/** The model provider: fails when the prompt says so, with the error code in the prompt. */
class StubProvider implements ImageProvider {
  calls: string[] = [];
  async generate(model: string, prompt: string) {
    this.calls.push(`${model}: ${prompt}`);
    const failure = /^fail:(\w+)/.exec(prompt);
    if (failure) throw Object.assign(new Error("provider failed"), { code: failure[1] });
    return { url: `https://cdn.example/${this.calls.length}.png` };
  }
}

class StubUi implements Ui {
  events: Array<{ kind: string; userId: string; detail: unknown }> = [];
  offerUpgrade(userId: string, reasons: string[]) {
    this.events.push({ kind: "upgrade", userId, detail: reasons });
  }
  offerCredits(userId: string, reasons: string[]) {
    this.events.push({ kind: "credits", userId, detail: reasons });
  }
  renderQuota(userId: string, quota: unknown) {
    this.events.push({ kind: "quota", userId, detail: quota });
  }
  last(kind: string, userId: string) {
    return this.events.filter((e) => e.kind === kind && e.userId === userId).at(-1)?.detail;
  }
}

async function allEntries(vevee: VeveeClient, userId: string): Promise<LedgerEntry[]> {
  const entries: LedgerEntry[] = [];
  for await (const entry of vevee.ledger(userId, { limit: 500 })) entries.push(entry);
  return entries;
}

describe("the walkthrough's steps 4 to 7 against the real server", () => {
  let server: RunningServer;
  let vevee: VeveeClient;
  let provider: StubProvider;
  let ui: StubUi;
  let app: ReturnType<typeof pixelForge>;

  before(async () => {
    server = await startServer();
    vevee = createClient({ apiKey: SECRET_KEY, baseUrl: server.baseUrl });
    provider = new StubProvider();
    ui = new StubUi();
    const store = new Map<string, string[]>();
    const purchases: Purchases = { set: (k, v) => void store.set(k, v), get: (k) => store.get(k) };
    app = pixelForge(vevee, provider, ui, purchases);
  });

  after(async () => {
    await server?.stop();
  });

  test("step 4: a generation holds first, commits on success and releases on a provider error", async () => {
    await app.onSubscriptionUpdated("ana", "free");

    // Free gives two Gemini images: both are held, generated and committed.
    assert.ok(await app.generateImage("ana", GEMINI, "a red fox"));
    assert.ok(await app.generateImage("ana", GEMINI, "a blue fox"));
    let ledger = await allEntries(vevee, "ana");
    const committed = ledger.filter((e) => e.type === "usage.committed");
    assert.equal(committed.length, 2);
    for (const entry of committed) {
      const reservation = await vevee.getReservation(entry.reservationId!);
      assert.equal(reservation.status, "committed");
      assert.equal(reservation.committedAmount, 1);
      assert.deepEqual(reservation.allocations, [
        { source: "plan", limitId: "images", balanceId: null, amount: 1 },
      ]);
      assert.match(String((reservation.response as { url: string }).url), /^https:\/\/cdn\.example\//);
    }

    // The third is denied before the provider is called: a value, not an exception.
    const callsBefore = provider.calls.length;
    assert.equal(await app.generateImage("ana", GEMINI, "a green fox"), null);
    assert.equal(provider.calls.length, callsBefore);
    assert.deepEqual(ui.last("upgrade", "ana"), ["plan_exhausted"]);
    const check = await vevee.canUse("ana", GEMINI, 1);
    assert.equal(check.allowed, false);
    assert.deepEqual(check.reasons, ["plan_exhausted"]);

    // She buys the Gemini top-up; the provider then fails: every unit goes back to the balance.
    const [topup] = await app.onCheckoutCompleted({
      id: "cs_test_ana_1",
      payment_intent: "pi_ana_1",
      metadata: { userId: "ana", packId: "cpk_gemini_topup" },
    });
    assert.ok(topup);
    await assert.rejects(app.generateImage("ana", GEMINI, "fail:provider_timeout"), {
      code: "provider_timeout",
    });
    ledger = await allEntries(vevee, "ana");
    const released = ledger[0]!;
    assert.equal(released.type, "usage.released");
    const reservation = await vevee.getReservation(released.reservationId!);
    assert.equal(reservation.status, "released");
    assert.equal(reservation.errorCode, "provider_timeout");
    assert.deepEqual(reservation.allocations, [
      { source: "credits", limitId: null, balanceId: topup.id, amount: 1 },
    ]);
    const balance = await vevee.credits.getBalance(topup.id);
    assert.equal(balance.remaining, 50);
    assert.equal(balance.reserved, 0);

    // And the next one is paid from the top-up.
    assert.ok(await app.generateImage("ana", GEMINI, "a fox, again"));
    assert.equal((await vevee.credits.getBalance(topup.id)).remaining, 49);
  });

  test("step 5: the quota widget sums plan and credits for image.*", async () => {
    await app.refreshQuota("ana");
    assert.deepEqual(ui.last("quota", "ana"), { planLeft: 0, creditsLeft: 49, total: 49 });

    // The Creator Bundle adds 10 DALL-E images (image.*) and 5 s of Veo video (not image.*).
    await app.onCheckoutCompleted({
      id: "cs_test_ana_2",
      payment_intent: "pi_ana_2",
      metadata: { userId: "ana", packId: "cpk_creator_bundle" },
    });
    await app.refreshQuota("ana");
    assert.deepEqual(ui.last("quota", "ana"), { planLeft: 0, creditsLeft: 59, total: 59 });

    // A pending hold is not spendable: it leaves the widget until it is committed or released.
    const hold = await vevee.reserve("ana", DALLE, 2);
    assert.equal(hold.allowed, true);
    await app.refreshQuota("ana");
    assert.deepEqual(ui.last("quota", "ana"), { planLeft: 0, creditsLeft: 57, total: 57 });
    await vevee.release(hold.reservationId!, { errorCode: "user_canceled" });

    // Pro: 40 image.* a month on top of the credits.
    await app.onSubscriptionUpdated("ana", "pro");
    await app.refreshQuota("ana");
    assert.deepEqual(ui.last("quota", "ana"), { planLeft: 40, creditsLeft: 59, total: 99 });
    const usage = await vevee.usage("ana", "image.*");
    assert.equal(usage.subscription?.planId, "pro");
    assert.deepEqual(
      usage.counters.map((c) => [c.planId, c.limitId, c.limit, c.used, c.period]),
      [["pro", "images", 40, 0, "month"]],
    );
    assert.ok(usage.credits.every((b) => b.match.startsWith("image.")));
  });

  test("step 6: a canceled subscription puts the user back on Free, with no new free images", async () => {
    await app.onSubscriptionUpdated("ben", "free");
    assert.ok(await app.generateImage("ben", GEMINI, "one"));
    assert.ok(await app.generateImage("ben", GEMINI, "two"));

    await app.onSubscriptionUpdated("ben", "pro");
    assert.ok(await app.generateImage("ben", GEMINI, "three, on Pro"));
    const entries = await allEntries(vevee, "ben");
    const onPro = await vevee.getReservation(entries.find((e) => e.type === "usage.committed")!.reservationId!);
    assert.deepEqual(onPro.allocations, [{ source: "plan", limitId: "images", balanceId: null, amount: 1 }]);

    await app.onSubscriptionDeleted("ben");
    const subscription = await vevee.getSubscription("ben");
    assert.equal(subscription.planId, "free");
    assert.equal(subscription.status, "active");
    const usage = await vevee.usage("ben", "image.*");
    assert.deepEqual(
      usage.counters.map((c) => [c.planId, c.limitId, c.used, c.remaining, c.period]),
      [["free", "images", 2, 0, "lifetime"]],
    );
    assert.equal(await app.generateImage("ben", GEMINI, "four"), null);
    assert.deepEqual(ui.last("upgrade", "ben"), ["plan_exhausted"]);

    const kinds = (await allEntries(vevee, "ben")).map((e) => e.type);
    assert.deepEqual(
      kinds.filter((k) => k.startsWith("subscription.")),
      ["subscription.updated", "subscription.updated", "subscription.updated"],
    );

    // cancelSubscription itself: no subscription for the matcher and for usage, credits untouched.
    await app.onSubscriptionUpdated("cy", "pro");
    const canceled = await vevee.cancelSubscription("cy");
    assert.equal(canceled.status, "canceled");
    assert.equal((await vevee.cancelSubscription({ userId: "cy" })).status, "canceled");
    assert.equal((await vevee.getSubscription("cy")).status, "canceled");
    assert.deepEqual((await vevee.usage("cy")).counters, []);
    const denied = await vevee.reserve("cy", GEMINI, 1);
    assert.equal(denied.allowed, false);
    assert.deepEqual(denied.reasons, ["no_subscription", "credits_exhausted"]);
  });

  test("step 7: a refund revokes the balances its checkout granted", async () => {
    const session = {
      id: "cs_test_dee_1",
      payment_intent: "pi_dee_1",
      metadata: { userId: "dee", packId: "cpk_creator_bundle" },
    };
    const balances = await app.onCheckoutCompleted(session);
    assert.deepEqual(
      balances.map((b) => [b.packItemId, b.match, b.granted, b.unit]),
      [
        ["dalle", DALLE, 10, "count"],
        ["veo", "video.veo-3", 5, "seconds"],
      ],
    );
    // Stripe redelivers the event: the same externalRef grants nothing more.
    const again = await vevee.credits.grant({
      userId: "dee",
      packId: "cpk_creator_bundle",
      externalRef: session.id,
      source: "purchase",
    });
    assert.equal(again.created, false);
    assert.deepEqual(again.balances.map((b) => b.id), balances.map((b) => b.id));

    assert.ok(await app.generateImage("dee", DALLE, "a cat"));
    assert.ok(await app.generateImage("dee", DALLE, "a dog"));
    const spent = await vevee.consume("dee", "video.veo-3", 3);
    assert.equal(spent.allowed, true);
    assert.equal(spent.status, "committed");

    const revoked = await app.onChargeRefunded({ payment_intent: session.payment_intent });
    assert.deepEqual(
      revoked.map((b) => [b.packItemId, b.status, b.remaining]),
      [
        ["dalle", "revoked", 0],
        ["veo", "revoked", 0],
      ],
    );
    // A second revoke changes nothing.
    const twice = await vevee.credits.revoke(balances[0]!.id, { reason: "refund" });
    assert.equal(twice.status, "revoked");

    const ledger = await allEntries(vevee, "dee");
    const revokedEntries = ledger.filter((e) => e.type === "credits.revoked");
    assert.deepEqual(
      revokedEntries.map((e) => [e.balanceId, e.amount, e.reason]).sort(),
      [
        [balances[0]!.id, 8, "refund"],
        [balances[1]!.id, 2, "refund"],
      ].sort(),
    );
    assert.equal(await app.generateImage("dee", DALLE, "a bird"), null);
    assert.deepEqual(ui.last("credits", "dee"), ["no_subscription", "credits_exhausted"]);
    assert.deepEqual((await vevee.usage("dee")).credits, []);
  });
});
