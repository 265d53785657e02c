// `withReservation` against the real server: commit when the callback resolves, a partial commit
// inside it is the only commit, release (with the error's code) when it throws, and a typed denial
// without calling it.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createClient, VeveeDeniedError, VeveeError, type VeveeClient } from "@vevee/sdk";
import { SECRET_KEY, startServer, type RunningServer } from "./support.js";

const GEMINI = "image.gemini-3-1-flash-image-preview";

describe("withReservation", () => {
  let server: RunningServer;
  let vevee: VeveeClient;

  before(async () => {
    server = await startServer();
    vevee = createClient({ apiKey: SECRET_KEY, baseUrl: server.baseUrl });
  });

  after(async () => {
    await server?.stop();
  });

  async function counter(userId: string): Promise<[number, number, number]> {
    const c = (await vevee.usage(userId, "image.*")).counters[0]!;
    return [c.used, c.reserved, c.remaining];
  }

  test("commits everything, with the hold's response, when the callback resolves", async () => {
    await vevee.upsertSubscription("wr_commit", "pro");
    const value = await vevee.withReservation({ userId: "wr_commit", model: GEMINI, amount: 2 }, async (hold) => {
      assert.equal(hold.reservation.status, "pending");
      assert.deepEqual(await counter("wr_commit"), [0, 2, 38], "held while the callback runs");
      hold.response = { url: "https://cdn/fox.png" };
      return { id: hold.reservationId };
    });
    const done = await vevee.getReservation(value.id);
    assert.equal(done.status, "committed");
    assert.equal(done.committedAmount, 2);
    assert.deepEqual(done.response, { url: "https://cdn/fox.png" });
    assert.deepEqual(await counter("wr_commit"), [2, 0, 38]);
  });

  test("a partial commit inside the callback is the only commit", async () => {
    await vevee.upsertSubscription("wr_partial", "pro");
    const id = await vevee.withReservation({ userId: "wr_partial", model: GEMINI, amount: 5 }, async (hold) => {
      const committed = await hold.commit({ amount: 3 });
      assert.equal(committed.committedAmount, 3);
      assert.equal(hold.settled, true);
      return hold.reservationId;
    });
    assert.equal((await vevee.getReservation(id)).committedAmount, 3);
    assert.deepEqual(await counter("wr_partial"), [3, 0, 37], "the other 2 went back to the plan");
  });

  test("a callback that throws releases with the error's code and the error goes on", async () => {
    await vevee.upsertSubscription("wr_throw", "pro");
    let id = "";
    const failure = Object.assign(new Error("the image model timed out"), { code: "provider_timeout" });
    await assert.rejects(
      vevee.withReservation({ userId: "wr_throw", model: GEMINI, amount: 4 }, async (hold) => {
        id = hold.reservationId;
        throw failure;
      }),
      (error: unknown) => error === failure,
    );
    const released = await vevee.getReservation(id);
    assert.equal(released.status, "released");
    assert.equal(released.errorCode, "provider_timeout");
    assert.deepEqual(await counter("wr_throw"), [0, 0, 40]);

    // Without a code, the error's name.
    await assert.rejects(
      vevee.withReservation({ userId: "wr_throw", model: GEMINI, amount: 1 }, (hold) => {
        id = hold.reservationId;
        throw new TypeError("bad prompt");
      }),
      TypeError,
    );
    assert.equal((await vevee.getReservation(id)).errorCode, "TypeError");
  });

  test("a denial throws VeveeDeniedError without calling the callback", async () => {
    await vevee.upsertSubscription("wr_denied", "free");
    let called = false;
    await assert.rejects(
      vevee.withReservation({ userId: "wr_denied", model: GEMINI, amount: 3 }, () => {
        called = true;
      }),
      (error: unknown) => {
        assert.ok(error instanceof VeveeDeniedError);
        assert.ok(error instanceof VeveeError);
        assert.deepEqual(error.reasons, ["plan_exhausted"]);
        assert.deepEqual(error.available, { plan: 2, credits: 0 });
        assert.equal(error.code, "plan_exhausted");
        assert.ok(error.requestId);
        return true;
      },
    );
    assert.equal(called, false);
    assert.deepEqual(await counter("wr_denied"), [0, 0, 2], "nothing was held");
  });
});
