// The SDK's types against vevee's OpenAPI document: `npm test` generates test/generated/openapi.ts
// from `vevee openapi` with openapi-typescript, and this file only compiles while
//   - every answer the document describes is assignable to the SDK type that receives it, and
//   - every body the SDK sends is assignable to the document's request body,
// so a change to the server's shapes without the SDK (or the other way round) fails the build.
// The few fields the SDK narrows further than JSON Schema says (literal `true`, an empty tuple)
// are compared on their own lines below.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { components, operations } from "./generated/openapi.js";
import type * as sdk from "../src/types.js";
import type { WebhookEventType } from "../src/webhooks.js";

type S = components["schemas"];
/** `true` when A and B have the same values. */
type Same<A, B> = Assignable<A, B> extends true ? Assignable<B, A> : false;

/** Compiles only when T is `true`. */
type Assert<T extends true> = T;
/** `true` when every value of A is a value of B. */
type Assignable<A, B> = [A] extends [B] ? true : false;
type Without<T, K extends PropertyKey> = Omit<T, K>;
/** `true` when A fits B and names no field B lacks (the server refuses unknown fields). */
type Fits<A, B> = Assignable<A, B> extends true
  ? [Exclude<keyof A, keyof B>] extends [never]
    ? true
    : false
  : false;

// ---- answers: document → SDK -------------------------------------------------------------------
export type Answers = [
  Assert<Assignable<S["Plan"], sdk.Plan>>,
  Assert<Assignable<S["PlanList"], sdk.List<sdk.Plan>>>,
  Assert<Assignable<S["Pack"], sdk.CreditPack>>,
  Assert<Assignable<S["PackList"], sdk.List<sdk.CreditPack>>>,
  Assert<Assignable<Without<S["Deleted"], "deleted">, Without<sdk.DeletedPlan, "deleted">>>,
  Assert<Assignable<S["Subscription"], sdk.Subscription>>,
  Assert<Assignable<S["Balance"], sdk.Balance>>,
  Assert<Assignable<S["Grant"], sdk.Grant>>,
  Assert<Assignable<S["Allocation"], sdk.Allocation>>,
  Assert<Assignable<S["Available"], sdk.Available>>,
  Assert<Assignable<S["Reason"], sdk.DenialReason>>,
  Assert<Assignable<S["ReservationStatus"], sdk.ReservationStatus>>,
  // `allowed`, `reasons`: the SDK says `true` and `[]`; checked as values in the test below.
  // `metadata`, `response`: any JSON, `unknown` in the generated types.
  Assert<
    Assignable<
      Without<S["Reservation"], "allowed" | "reasons" | "metadata" | "response">,
      Without<sdk.Reservation, "allowed" | "reasons" | "metadata" | "response">
    >
  >,
  Assert<Assignable<Without<S["Denial"], "allowed">, Without<sdk.Denial, "allowed">>>,
  Assert<Assignable<S["Check"], sdk.CheckResult>>,
  Assert<Assignable<S["Counter"], sdk.Counter>>,
  Assert<Assignable<S["Usage"], sdk.Usage>>,
  Assert<Assignable<S["LedgerEntry"], sdk.LedgerEntry>>,
  Assert<Assignable<S["LedgerPage"], sdk.List<sdk.LedgerEntry>>>,
  Assert<Assignable<S["Clock"], sdk.TestClock>>,
  Assert<Assignable<S["WebhookEndpoint"], sdk.WebhookEndpoint>>,
  Assert<Assignable<S["WebhookEndpointWithSecret"], sdk.WebhookEndpointWithSecret>>,
  Assert<Assignable<S["WebhookEndpointList"], sdk.WebhookEndpointList>>,
  Assert<
    Assignable<Without<S["WebhookEndpointDeleted"], "deleted">, Without<sdk.DeletedWebhookEndpoint, "deleted">>
  >,
  // An event's `type` and `data` are a correlated union in the SDK (`WebhookEvent`), which the
  // document cannot say; its type lists are compared both ways instead.
  Assert<Same<S["EventType"], WebhookEventType>>,
  Assert<Same<S["EventTypeOrAll"], sdk.WebhookEndpointEventType>>,
];

// ---- requests: SDK → document ------------------------------------------------------------------
export type Requests = [
  Assert<Fits<sdk.PlanParams, S["PlanBody"]>>,
  Assert<Fits<sdk.CreditPackParams, S["PackBody"]>>,
  Assert<Fits<Without<sdk.UpsertSubscriptionParams, "userId">, S["SubscriptionBody"]>>,
  // `expiresAt` may be a Date in the SDK, which sends it as an RFC 3339 string.
  Assert<
    Fits<Without<sdk.GrantParams, "expiresAt"> & { expiresAt?: string | null }, S["GrantBody"]>
  >,
  Assert<Fits<Without<sdk.RevokeParams, "balanceId">, S["RevokeBody"]>>,
  Assert<Fits<sdk.ReserveParams, S["ReserveBody"]>>,
  Assert<Fits<sdk.CheckParams, S["CheckBody"]>>,
  Assert<Fits<sdk.ConsumeParams, S["ConsumeBody"]>>,
  Assert<Fits<sdk.CommitParams, S["CommitBody"]>>,
  Assert<Fits<sdk.ReleaseParams, S["ReleaseBody"]>>,
  Assert<Fits<sdk.WebhookEndpointCreateParams, S["CreateEndpointBody"]>>,
  Assert<Fits<sdk.WebhookEndpointUpdateParams, S["UpdateEndpointBody"]>>,
  Assert<Fits<sdk.EventListParams, NonNullable<operations["listEvents"]["parameters"]["query"]>>>,
];

test("the generated document types exist for every shape the SDK uses", () => {
  // A value check as well, so this file is a test that runs, not only one that compiles: the
  // narrowed fields are what the document's examples say.
  const reservation: S["Reservation"] = {
    reservationId: "res_1", allowed: true, reasons: [], status: "pending", userId: "ana",
    model: "image.dall-e-3", amount: 1, allocations: [], expiresAt: "2026-11-22T21:50:00Z",
    createdAt: "2026-11-22T21:40:00Z", metadata: null, committedAmount: null, response: null,
    errorCode: null,
  };
  const narrowed: sdk.Reservation = {
    ...reservation, allowed: true, reasons: [], metadata: null, response: null,
  };
  assert.equal(narrowed.allowed, reservation.allowed);
  assert.deepEqual(narrowed.reasons, reservation.reasons);
});
