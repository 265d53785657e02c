// @vevee/sdk: the TypeScript client for vevee's HTTP API v1.
//
//   import { createClient } from "@vevee/sdk";
//   const vevee = createClient({ apiKey: process.env.VEVEE_SECRET_KEY! });
//   const hold = await vevee.reserve(userId, "image.dall-e-3", 1);
//   if (!hold.allowed) { /* hold.reasons: offer an upgrade or credits */ }

export {
  createClient,
  isBrowser,
  VERSION,
  type ClientOptions,
  type PagePromise,
  type VeveeClient,
  type WithResponse,
} from "./client.js";
export {
  backoffMs,
  newIdempotencyKey,
  parseRetryAfter,
  type FetchLike,
  type HttpRequest,
  type RequestOptions,
  type ResponseInfo,
} from "./transport.js";
export { BATCH_OPERATIONS_MAX, type BatchOptions } from "./batcher.js";
export * from "./errors.js";
export {
  verifyWebhook,
  type PlanLimitReachedData,
  type VerifyWebhookOptions,
  type WebhookEvent,
  type WebhookEventData,
  type WebhookEventType,
  type WebhookHeaders,
} from "./webhooks.js";
export type * from "./types.js";
