// verifyWebhook against the official Standard Webhooks library (`standardwebhooks` on npm, a dev
// dependency only): what it signs, ours accepts; what is tampered, stale, unsigned or signed with
// another secret, ours refuses with the right reason. Two fixed vectors computed outside JavaScript
// (below) make sure both libraries are not simply agreeing on the same mistake. Needs no server.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import { Webhook } from "standardwebhooks";
import {
  verifyWebhook,
  VeveeError,
  WebhookVerificationError,
  type WebhookEvent,
  type WebhookVerificationReason,
} from "@vevee/sdk";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET = "whsec_dmV2ZWUtd2ViaG9vay10ZXN0LWtleS0y";
const NOW_S = 1_795_383_600; // 2026-11-22T21:40:00Z
const NOW = () => NOW_S * 1000;

const EVENT = {
  id: "evt_01",
  type: "credits.low",
  createdAt: "2026-11-22T21:40:00Z",
  mode: "test",
  data: {
    id: "bal_01",
    userId: "ana",
    packId: "cpk_creator_bundle",
    packItemId: "dalle",
    match: "image.dall-e-3",
    unit: "count",
    granted: 10,
    remaining: 2,
    reserved: 0,
    status: "active",
    source: "purchase",
    externalRef: "cs_test_1",
    notes: "café ✓",
    expiresAt: null,
    createdAt: "2026-11-01T00:00:00Z",
  },
} as const;
const BODY = JSON.stringify(EVENT);

/** What vevee sends for `body`, signed by the official library with each of `secrets`. */
function signed(
  body: string,
  options: { secrets?: string[]; id?: string; at?: number } = {},
): Record<string, string> {
  const id = options.id ?? "evt_01";
  const at = new Date((options.at ?? NOW_S) * 1000);
  const signatures = (options.secrets ?? [SECRET]).map((s) => new Webhook(s).sign(id, at, body));
  return {
    "webhook-id": id,
    "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
    "webhook-signature": signatures.join(" "),
  };
}

async function refusal(promise: Promise<unknown>): Promise<WebhookVerificationReason> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof WebhookVerificationError, `not a WebhookVerificationError: ${error}`);
    assert.ok(error instanceof VeveeError);
    assert.equal(error.type, "webhook_verification");
    assert.equal(error.code, error.reason);
    return error.reason;
  }
  assert.fail("verifyWebhook accepted it");
}

describe("verifyWebhook and the official standardwebhooks library", () => {
  test("what the official library signs verifies, and the event comes back parsed", async () => {
    const event = await verifyWebhook(BODY, signed(BODY), SECRET, { now: NOW });
    assert.deepEqual(event, EVENT);
  });

  test("the body as bytes (a Node Buffer, a plain Uint8Array) verifies the same", async () => {
    const headers = signed(BODY);
    assert.deepEqual(await verifyWebhook(Buffer.from(BODY), headers, SECRET, { now: NOW }), EVENT);
    const bytes = new Uint8Array(new TextEncoder().encode(BODY));
    assert.deepEqual(await verifyWebhook(bytes, headers, SECRET, { now: NOW }), EVENT);
  });

  test("against the wall clock, with the default tolerance", async () => {
    const at = Math.floor(Date.now() / 1000);
    assert.deepEqual(await verifyWebhook(BODY, signed(BODY, { at }), SECRET), EVENT);
  });

  test("the secret without its whsec_ prefix works too (as in the official library)", async () => {
    const bare = SECRET.slice("whsec_".length);
    assert.deepEqual(await verifyWebhook(BODY, signed(BODY), bare, { now: NOW }), EVENT);
  });

  test("a tampered body is refused: no_matching_signature", async () => {
    const headers = signed(BODY);
    const tampered = BODY.replace('"remaining":2', '"remaining":9');
    assert.notEqual(tampered, BODY);
    assert.equal(await refusal(verifyWebhook(tampered, headers, SECRET, { now: NOW })), "no_matching_signature");
    // Re-serialized JSON is a different body too: same data, other bytes.
    const reserialized = JSON.stringify(JSON.parse(BODY), null, 2);
    assert.equal(
      await refusal(verifyWebhook(reserialized, headers, SECRET, { now: NOW })),
      "no_matching_signature",
    );
  });

  test("a changed webhook-id or webhook-timestamp is refused: both are signed", async () => {
    const headers = signed(BODY);
    assert.equal(
      await refusal(verifyWebhook(BODY, { ...headers, "webhook-id": "evt_02" }, SECRET, { now: NOW })),
      "no_matching_signature",
    );
    const later = { ...headers, "webhook-timestamp": String(NOW_S + 1) };
    assert.equal(await refusal(verifyWebhook(BODY, later, SECRET, { now: NOW })), "no_matching_signature");
  });

  test("another secret is refused: no_matching_signature", async () => {
    const headers = signed(BODY, { secrets: [OTHER_SECRET] });
    assert.equal(await refusal(verifyWebhook(BODY, headers, SECRET, { now: NOW })), "no_matching_signature");
  });

  test("a stale or future timestamp is refused: timestamp_out_of_tolerance", async () => {
    for (const at of [NOW_S - 301, NOW_S + 301, NOW_S - 86_400]) {
      const headers = signed(BODY, { at });
      assert.equal(
        await refusal(verifyWebhook(BODY, headers, SECRET, { now: NOW })),
        "timestamp_out_of_tolerance",
        `sent at now ${at - NOW_S} s`,
      );
    }
    // 300 s either way is still inside, as in the official library.
    for (const at of [NOW_S - 300, NOW_S + 300]) {
      assert.deepEqual(await verifyWebhook(BODY, signed(BODY, { at }), SECRET, { now: NOW }), EVENT);
    }
    // toleranceSeconds widens or narrows it.
    const old = signed(BODY, { at: NOW_S - 3600 });
    assert.deepEqual(await verifyWebhook(BODY, old, SECRET, { now: NOW, toleranceSeconds: 3600 }), EVENT);
    const recent = signed(BODY, { at: NOW_S - 10 });
    assert.equal(
      await refusal(verifyWebhook(BODY, recent, SECRET, { now: NOW, toleranceSeconds: 5 })),
      "timestamp_out_of_tolerance",
    );
  });

  test("a stale timestamp is refused even when its signature is right (no replay)", async () => {
    const headers = signed(BODY, { at: NOW_S - 3600 });
    assert.equal(await refusal(verifyWebhook(BODY, headers, SECRET, { now: NOW })), "timestamp_out_of_tolerance");
  });

  test("a timestamp that is not Unix seconds is refused: bad_timestamp", async () => {
    for (const bad of ["abc", "1795383600.5", "-1795383600", "2026-11-22T21:40:00Z", "0x6B0A5F30"]) {
      const headers = { ...signed(BODY), "webhook-timestamp": bad };
      assert.equal(await refusal(verifyWebhook(BODY, headers, SECRET, { now: NOW })), "bad_timestamp", bad);
    }
  });

  test("a missing or empty header is refused: missing_header", async () => {
    for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
      const without: Record<string, string> = { ...signed(BODY) };
      delete without[name];
      assert.equal(await refusal(verifyWebhook(BODY, without, SECRET, { now: NOW })), "missing_header", name);
      const empty = { ...signed(BODY), [name]: "  " };
      assert.equal(await refusal(verifyWebhook(BODY, empty, SECRET, { now: NOW })), "missing_header", name);
    }
    assert.equal(await refusal(verifyWebhook(BODY, {}, SECRET, { now: NOW })), "missing_header");
    assert.equal(await refusal(verifyWebhook(BODY, new Headers(), SECRET, { now: NOW })), "missing_header");
  });

  test("two signatures (a secret rotation): either one matching verifies", async () => {
    // The old secret signs first, the new one second; a receiver that has the new one only.
    const rotation = signed(BODY, { secrets: [OTHER_SECRET, SECRET] });
    assert.equal(rotation["webhook-signature"]!.split(" ").length, 2);
    assert.deepEqual(await verifyWebhook(BODY, rotation, SECRET, { now: NOW }), EVENT);
    // … and one that still has the old one.
    assert.deepEqual(await verifyWebhook(BODY, rotation, OTHER_SECRET, { now: NOW }), EVENT);
    // Neither matching: refused.
    const third = "whsec_" + Buffer.from("a third secret, 24 bytes.").toString("base64");
    assert.equal(await refusal(verifyWebhook(BODY, rotation, third, { now: NOW })), "no_matching_signature");
  });

  test("other versions and malformed entries are skipped, not fatal", async () => {
    const good = signed(BODY)["webhook-signature"]!;
    const sig = good.slice("v1,".length);
    const headers = {
      ...signed(BODY),
      "webhook-signature": `v1a,${sig} v2,${sig} garbage v1,not*base64 v1, ${good}`,
    };
    assert.deepEqual(await verifyWebhook(BODY, headers, SECRET, { now: NOW }), EVENT);
    // The right bytes under another version are not a v1 signature.
    const onlyV2 = { ...signed(BODY), "webhook-signature": `v2,${sig}` };
    assert.equal(await refusal(verifyWebhook(BODY, onlyV2, SECRET, { now: NOW })), "no_matching_signature");
  });

  test("header names in any case, in a plain object or a Fetch Headers", async () => {
    const h = signed(BODY);
    const mixed = {
      "WEBHOOK-ID": h["webhook-id"],
      "Webhook-Timestamp": h["webhook-timestamp"],
      "wEbHoOk-SiGnAtUrE": h["webhook-signature"],
      "Content-Type": "application/json",
    };
    assert.deepEqual(await verifyWebhook(BODY, mixed, SECRET, { now: NOW }), EVENT);
    assert.deepEqual(await verifyWebhook(BODY, new Headers(mixed), SECRET, { now: NOW }), EVENT);
  });

  test("a signature header sent twice (Node's string[], Fetch's joined value) still verifies", async () => {
    const h = signed(BODY, { secrets: [OTHER_SECRET, SECRET] });
    const [first, second] = h["webhook-signature"]!.split(" ");
    const nodeStyle = { ...h, "webhook-signature": [first!, second!] };
    assert.deepEqual(await verifyWebhook(BODY, nodeStyle, SECRET, { now: NOW }), EVENT);
    const fetchStyle = new Headers({ "webhook-id": h["webhook-id"]!, "webhook-timestamp": h["webhook-timestamp"]! });
    // The matching signature first, so that it is the one followed by the joining comma.
    fetchStyle.append("webhook-signature", second!);
    fetchStyle.append("webhook-signature", first!);
    assert.equal(fetchStyle.get("webhook-signature"), `${second}, ${first}`);
    assert.deepEqual(await verifyWebhook(BODY, fetchStyle, SECRET, { now: NOW }), EVENT);
  });

  test("a secret that is not whsec_ + base64 is refused: bad_secret", async () => {
    for (const bad of ["", "whsec_", "whsec_not base64!", "sk_test_sdk_suite", "whsec_abc"]) {
      assert.equal(await refusal(verifyWebhook(BODY, signed(BODY), bad, { now: NOW })), "bad_secret", bad);
    }
    // The secret is checked first, so a misconfiguration shows on every request, even a bad one.
    assert.equal(await refusal(verifyWebhook(BODY, {}, "", { now: NOW })), "bad_secret");
  });

  test("a parsed body, or a signed body that is not an event, is refused: invalid_payload", async () => {
    const parsed = JSON.parse(BODY) as unknown as string;
    assert.equal(await refusal(verifyWebhook(parsed, signed(BODY), SECRET, { now: NOW })), "invalid_payload");
    for (const body of ["not json", "[1,2]", "null", '{"id":"evt_1"}', '{"id":"evt_1","type":"x","data":null}']) {
      assert.equal(await refusal(verifyWebhook(body, signed(body), SECRET, { now: NOW })), "invalid_payload", body);
    }
    // Signed bytes that are not UTF-8 (the official library signs strings only, so node:crypto
    // signs these).
    const latin1 = Buffer.from(BODY.replace("café ✓", "caf\u00e9"), "latin1");
    const key = Buffer.from(SECRET.slice("whsec_".length), "base64");
    const mac = createHmac("sha256", key).update(`evt_01.${NOW_S}.`).update(latin1).digest("base64");
    const headers = { ...signed(BODY), "webhook-signature": `v1,${mac}` };
    assert.equal(await refusal(verifyWebhook(latin1, headers, SECRET, { now: NOW })), "invalid_payload");
    // The same check proves that bytes are verified as bytes: as UTF-8 they would not match.
    assert.equal(
      await refusal(verifyWebhook(latin1.toString("utf8"), headers, SECRET, { now: NOW })),
      "no_matching_signature",
    );
  });

  test("an unknown event type still verifies and comes back as sent", async () => {
    const body = '{"id":"evt_9","type":"credits.something_new","createdAt":"2026-11-22T21:40:00Z","mode":"live","data":{}}';
    const event = await verifyWebhook(body, signed(body, { id: "evt_9" }), SECRET, { now: NOW });
    assert.equal((event as { type: string }).type, "credits.something_new");
  });

  test("without a global crypto (Node 18) it falls back to node:crypto's webcrypto", async () => {
    const descriptor = Object.getOwnPropertyDescriptor(globalThis, "crypto");
    assert.ok(descriptor?.configurable);
    Object.defineProperty(globalThis, "crypto", { value: undefined, configurable: true, writable: true });
    try {
      assert.equal((globalThis as { crypto?: unknown }).crypto, undefined);
      assert.deepEqual(await verifyWebhook(BODY, signed(BODY), SECRET, { now: NOW }), EVENT);
    } finally {
      Object.defineProperty(globalThis, "crypto", descriptor!);
    }
  });
});

// Fixed vectors, computed without any JavaScript HMAC, so that a mistake shared by both libraries
// (say, signing "{id}.{timestamp}{body}", or keying with the secret's text instead of its decoded
// bytes) would fail here:
//
//   key=$(printf %s "$SECRET_WITHOUT_WHSEC_PREFIX" | base64 -d | xxd -p -c 256)
//   printf %s "$ID.$TIMESTAMP.$BODY" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$key -binary | base64
describe("fixed vectors", () => {
  test("the Standard Webhooks spec's own example", async () => {
    // Published with the spec and its reference libraries; recomputed with the openssl line above
    // (key 31f290f6bf06298aab4f08d43c3f082cf648a362da2da4b0).
    const body = '{"test": 2432232314}';
    const headers = {
      "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
      "webhook-timestamp": "1614265330",
      "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    };
    const now = () => 1614265330 * 1000;
    // The signature matches, then the body is refused only because it is not a vevee event …
    assert.equal(await refusal(verifyWebhook(body, headers, SECRET, { now })), "invalid_payload");
    // … whereas one changed bit of the signature is refused before the body is looked at,
    const flipped = { ...headers, "webhook-signature": "v1,h0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" };
    assert.equal(await refusal(verifyWebhook(body, flipped, SECRET, { now })), "no_matching_signature");
    // and so is another spelling of the same bytes (the last character's two unused bits set).
    const respelled = { ...headers, "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=" };
    assert.equal(
      Buffer.from("g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=", "base64").toString("base64"),
      "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    );
    assert.equal(await refusal(verifyWebhook(body, respelled, SECRET, { now })), "no_matching_signature");
  });

  test("a vevee event with non-ASCII text (UTF-8 bytes are signed)", async () => {
    // OTHER_SECRET is whsec_ + base64("vevee-webhook-test-key-2"), key
    // 76657665652d776562686f6f6b2d746573742d6b65792d32; ID evt_01, TIMESTAMP 1795383600, BODY the
    // JSON.stringify(EVENT) of this file (its notes "café ✓" as UTF-8).
    const headers = {
      "webhook-id": "evt_01",
      "webhook-timestamp": "1795383600",
      "webhook-signature": "v1,IDfY6kA0QCCr8c3oFUnzOIWC6cfr1nyqQRudoDLtbZM=",
    };
    assert.deepEqual(await verifyWebhook(BODY, headers, OTHER_SECRET, { now: NOW }), EVENT);
    assert.deepEqual(await verifyWebhook(Buffer.from(BODY, "utf8"), headers, OTHER_SECRET, { now: NOW }), EVENT);
    // The official library computes the same value.
    assert.equal(new Webhook(OTHER_SECRET).sign("evt_01", new Date(NOW_S * 1000), BODY), headers["webhook-signature"]);
  });
});

describe("a receiver", () => {
  test("a plain node:http handler that reads the raw body, as in the README", async () => {
    const received: WebhookEvent[] = [];
    const server = http.createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      try {
        const event = await verifyWebhook(Buffer.concat(chunks), req.headers, SECRET, { now: NOW });
        received.push(event);
        res.writeHead(204).end();
      } catch (error) {
        if (!(error instanceof WebhookVerificationError)) throw error;
        res.writeHead(400, { "content-type": "text/plain" }).end(error.reason);
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/vevee`;
    try {
      const ok = await fetch(url, {
        method: "POST",
        headers: { ...signed(BODY), "content-type": "application/json" },
        body: BODY,
      });
      assert.equal(ok.status, 204);
      const bad = await fetch(url, { method: "POST", headers: signed(BODY), body: BODY + " " });
      assert.equal(bad.status, 400);
      assert.equal(await bad.text(), "no_matching_signature");
      assert.deepEqual(received, [EVENT]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test("the event union narrows on type (this only compiles if it does)", () => {
    const describe = (event: WebhookEvent): string => {
      switch (event.type) {
        case "credits.low":
        case "credits.depleted":
          return `${event.data.userId}: ${event.data.remaining} of ${event.data.granted} left`;
        case "plan.limit_reached":
          return `${event.data.userId}: ${event.data.counter.limitId} used up until ${event.data.counter.resetsAt}`;
        case "subscription.updated":
          return `${event.data.userId} on ${event.data.planId}`;
        case "reservation.expired":
          return `${event.data.reservationId} expired`;
        default:
          return event.type;
      }
    };
    assert.equal(describe(EVENT), "ana: 2 of 10 left");
  });
});
