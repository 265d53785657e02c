// Webhooks out: vevee POSTs events to the app's endpoints, signed per the Standard Webhooks spec
// (https://www.standardwebhooks.com). `verifyWebhook` checks such a request and returns its event.
//
// It uses Web Crypto (`crypto.subtle`), not Node's `crypto` module, so that it runs wherever the rest
// of this package does: Node 18+, Deno, Bun, Cloudflare Workers and other edge runtimes. Web Crypto
// is asynchronous, so `verifyWebhook` returns a promise.

import { VeveeConfigurationError, WebhookVerificationError } from "./errors.js";
import type { Balance, Counter, Reservation, Subscription, Timestamp } from "./types.js";

/** The `data` of each event type (API.md, "Webhooks out"). */
export interface WebhookEventData {
  "credits.granted": Balance;
  "credits.revoked": Balance;
  "credits.expired": Balance;
  /** `remaining` dropped to the balance's `lowBalanceThreshold` or below. */
  "credits.low": Balance;
  /** `remaining` reached 0. */
  "credits.depleted": Balance;
  /** `expiresAt` is `expiring_notice_days` (default 3) away. */
  "credits.expiring": Balance;
  /** A plan counter's `remaining` reached 0. */
  "plan.limit_reached": PlanLimitReachedData;
  "subscription.updated": Subscription;
  "subscription.canceled": Subscription;
  /** A pending reservation passed its TTL. */
  "reservation.expired": Reservation;
}

export interface PlanLimitReachedData {
  userId: string;
  counter: Counter;
}

export type WebhookEventType = keyof WebhookEventData;

/**
 * An event as vevee sends it (and as `GET /v1/events` lists it). A union over the event types:
 * `switch (event.type)` narrows `data`. A newer server may send a type this version does not know;
 * keep a `default` branch that ignores it.
 */
export type WebhookEvent<T extends WebhookEventType = WebhookEventType> = {
  [K in T]: {
    /** `evt_…`, also the `webhook-id` header: the same on every retry, so deduplicate on it. */
    id: string;
    type: K;
    createdAt: Timestamp;
    mode: "live" | "test";
    data: WebhookEventData[K];
  };
}[T];

/** Request headers: a Fetch `Headers`, or a plain object like Node's `req.headers`. */
export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

export interface VerifyWebhookOptions {
  /** How far `webhook-timestamp` may be from now, either way, in seconds. Default 300. */
  toleranceSeconds?: number;
  /** The current time in milliseconds since the epoch, like `Date.now` (the default). */
  now?: () => number;
}

const SECRET_PREFIX = "whsec_";
const DEFAULT_TOLERANCE_SECONDS = 300;
// Standard base64 with its padding: what the spec signs with, and what vevee's secrets are.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const UNIX_SECONDS = /^[0-9]{1,15}$/;

/**
 * Verifies a webhook request from vevee and returns its event.
 *
 * - `payload`: the raw request body, exactly as received (a string, or bytes such as a Node
 *   `Buffer`), never `JSON.stringify` of a parsed body: the signature covers the bytes.
 * - `headers`: the request's headers; names are matched in any case.
 * - `secret`: the endpoint's `whsec_…` secret (the prefix may be left out).
 *
 * Checks, in order: the secret decodes; `webhook-id`, `webhook-timestamp` and `webhook-signature`
 * are present; the timestamp is within `toleranceSeconds` of now, either way; one of the
 * space-separated `v1,<base64>` signatures (two during a secret rotation) is the HMAC-SHA256,
 * keyed with the secret's decoded bytes, of `"{id}.{timestamp}.{payload}"`, compared in constant
 * time; the body is a JSON event. Rejects with a `WebhookVerificationError` (`reason`) otherwise.
 */
export async function verifyWebhook(
  payload: string | Uint8Array,
  headers: WebhookHeaders,
  secret: string,
  options: VerifyWebhookOptions = {},
): Promise<WebhookEvent> {
  const toleranceSeconds = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  if (typeof toleranceSeconds !== "number" || !(toleranceSeconds >= 0)) {
    throw new VeveeConfigurationError({
      message: "verifyWebhook: toleranceSeconds must be a number from 0",
      type: "configuration",
      code: "invalid_option",
    });
  }
  const now = options.now ?? Date.now;

  const key = decodeSecret(secret);
  const body = payloadBytes(payload);

  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signature = header(headers, "webhook-signature");
  const missing = [
    id === null ? "webhook-id" : null,
    timestamp === null ? "webhook-timestamp" : null,
    signature === null ? "webhook-signature" : null,
  ].filter((name) => name !== null);
  if (id === null || timestamp === null || signature === null) {
    throw new WebhookVerificationError("missing_header", `missing header: ${missing.join(", ")}`);
  }

  if (!UNIX_SECONDS.test(timestamp)) {
    throw new WebhookVerificationError(
      "bad_timestamp",
      `webhook-timestamp is not a whole number of Unix seconds: ${JSON.stringify(timestamp)}`,
    );
  }
  const sentAt = Number(timestamp);
  const nowMs = now();
  if (typeof nowMs !== "number" || !Number.isFinite(nowMs)) {
    throw new VeveeConfigurationError({
      message: "verifyWebhook: now() must return milliseconds since the epoch, like Date.now()",
      type: "configuration",
      code: "invalid_option",
    });
  }
  const nowSeconds = Math.floor(nowMs / 1000);
  if (Math.abs(nowSeconds - sentAt) > toleranceSeconds) {
    throw new WebhookVerificationError(
      "timestamp_out_of_tolerance",
      `webhook-timestamp ${sentAt} is ${nowSeconds - sentAt} s before now ` +
        `(tolerance ${toleranceSeconds} s either way): a replay, or a wrong clock`,
    );
  }

  const candidates = v1Signatures(signature);
  if (candidates.length > 0) {
    const subtle = await subtleCrypto();
    const hmacKey = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, [
      "verify",
    ]);
    const signed = concat(utf8(`${id}.${timestamp}.`), body);
    for (const candidate of candidates) {
      // `verify` recomputes the MAC and compares it in constant time inside the platform's crypto
      // (Node: CRYPTO_memcmp; browsers: BoringSSL/NSS), not with a JS loop the JIT could shortcut.
      if (await subtle.verify("HMAC", hmacKey, candidate, signed)) {
        return parseEvent(body);
      }
    }
  }
  throw new WebhookVerificationError(
    "no_matching_signature",
    "no v1 signature in webhook-signature matches this body and secret: the body was changed " +
      "(verify the raw bytes, not re-serialized JSON), or the secret is not this endpoint's",
  );
}

function decodeSecret(secret: string): Uint8Array<ArrayBuffer> {
  const encoded =
    typeof secret === "string" && secret.startsWith(SECRET_PREFIX)
      ? secret.slice(SECRET_PREFIX.length)
      : secret;
  const key = typeof encoded === "string" ? decodeBase64(encoded) : null;
  if (key === null || key.length === 0) {
    throw new WebhookVerificationError(
      "bad_secret",
      "the webhook secret must be the endpoint's whsec_… secret (whsec_ and base64), " +
        "as POST /v1/webhook-endpoints or rotate-secret answered it",
    );
  }
  return key;
}

function payloadBytes(payload: string | Uint8Array): Uint8Array {
  if (typeof payload === "string") return utf8(payload);
  if (payload instanceof Uint8Array) return payload;
  throw new WebhookVerificationError(
    "invalid_payload",
    "the payload must be the raw request body, a string or bytes (a Buffer), not a parsed " +
      "object: e.g. express.raw({ type: \"application/json\" }) or `await request.text()`",
  );
}

/** A header's value, its name in any case; `null` when missing or empty. */
function header(headers: WebhookHeaders, name: string): string | null {
  let values: string[];
  if (typeof (headers as Headers).get === "function") {
    const value = (headers as Headers).get(name);
    values = value === null ? [] : [value];
  } else {
    values = [];
    for (const [key, value] of Object.entries(headers as Record<string, unknown>)) {
      if (key.toLowerCase() !== name) continue;
      if (typeof value === "string") values.push(value);
      else if (Array.isArray(value)) {
        for (const v of value) if (typeof v === "string") values.push(v);
      }
    }
  }
  // A header sent twice reads as its values joined with ", ", as Fetch and HTTP do.
  const joined = values
    .map((v) => v.trim())
    .filter((v) => v !== "")
    .join(", ");
  return joined === "" ? null : joined;
}

/** The decoded `v1` signatures of `webhook-signature` (`v1,<base64> v1,<base64>`); others are skipped. */
function v1Signatures(value: string): Uint8Array<ArrayBuffer>[] {
  const out: Uint8Array<ArrayBuffer>[] = [];
  for (let entry of value.split(/\s+/)) {
    // A header repeated and joined by ", " leaves a comma after an entry; base64 has none.
    if (entry.endsWith(",")) entry = entry.slice(0, -1);
    const comma = entry.indexOf(",");
    if (comma < 0 || entry.slice(0, comma) !== "v1") continue;
    const bytes = decodeBase64(entry.slice(comma + 1));
    if (bytes !== null && bytes.length > 0) out.push(bytes);
  }
  return out;
}

function parseEvent(body: Uint8Array): WebhookEvent {
  let event: unknown;
  try {
    event = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (error) {
    throw invalidEvent(`the signed body is not UTF-8 JSON (${(error as Error).message})`);
  }
  if (typeof event !== "object" || event === null || Array.isArray(event)) {
    throw invalidEvent("the signed body is not a JSON object");
  }
  const e = event as Record<string, unknown>;
  if (typeof e.id !== "string" || typeof e.type !== "string") {
    throw invalidEvent("the signed body has no string id and type: not a vevee event");
  }
  if (typeof e.data !== "object" || e.data === null) {
    throw invalidEvent("the signed body has no data object: not a vevee event");
  }
  return event as WebhookEvent;
}

function invalidEvent(message: string): WebhookVerificationError {
  return new WebhookVerificationError("invalid_payload", message);
}

async function subtleCrypto(): Promise<SubtleCrypto> {
  const platform = (globalThis as { crypto?: { subtle?: SubtleCrypto } }).crypto;
  if (platform?.subtle) return platform.subtle;
  // Node 18 has Web Crypto only as `require("node:crypto").webcrypto` (global from Node 19). The
  // specifier is a variable so that bundlers for browsers leave this import alone.
  const nodeCrypto = "node:crypto";
  try {
    const mod = (await import(/* webpackIgnore: true */ /* @vite-ignore */ nodeCrypto)) as {
      webcrypto?: { subtle?: SubtleCrypto };
    };
    if (mod.webcrypto?.subtle) return mod.webcrypto.subtle;
  } catch {
    // not Node: fall through
  }
  throw new VeveeConfigurationError({
    message:
      "verifyWebhook needs Web Crypto (crypto.subtle): Node 18+, Deno, Bun, an edge runtime, or a " +
      "browser page served over https",
    type: "configuration",
    code: "web_crypto_missing",
  });
}

function utf8(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(text) as Uint8Array<ArrayBuffer>;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Strict, canonical standard base64 (with padding) to bytes; `null` if it is not that. */
function decodeBase64(text: string): Uint8Array<ArrayBuffer> | null {
  if (!BASE64.test(text)) return null;
  const binary = atob(text);
  // atob ignores the unused low bits of the last character: "…E=" and "…F=" give the same bytes.
  // Only the canonical spelling is the signature that was sent (the official libraries compare the
  // base64 text, so they refuse the other spellings too).
  if (btoa(binary) !== text) return null;
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}
