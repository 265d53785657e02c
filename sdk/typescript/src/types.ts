// The shapes of vevee's HTTP API v1 (shared/API.md), field for field. Timestamps are RFC 3339 UTC
// strings; a field with no value is `null`, never missing.

import type { WebhookEventType } from "./webhooks.js";

/** An RFC 3339 UTC timestamp, e.g. `2026-11-22T21:40:00Z`. */
export type Timestamp = string;

/** Any JSON value: what `metadata` and a commit's `response` may hold. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** `{"data": [...], "hasMore": false}`. */
export interface List<T> {
  data: T[];
  hasMore: boolean;
}

// ---------------------------------------------------------------------------------------------
// Catalog

export type Period = "lifetime" | "day" | "week" | "month" | "year";

export interface PlanPrice {
  /** In the currency's smallest unit; 0 for a free plan. */
  amount: number;
  currency: string;
  /** `null` for a free plan. */
  interval: "month" | "year" | null;
}

export interface PlanLimit {
  id: string;
  name: string;
  /** Match patterns: a model key, `category.*`, or `*`. */
  match: string[];
  limit: number;
  unit: string;
  period: Period;
}

export interface Plan {
  id: string;
  name: string;
  price: PlanPrice;
  limits: PlanLimit[];
  createdAt: Timestamp;
  updatedAt: Timestamp;
}

/** The body of `POST /v1/plans` and `PUT /v1/plans/{id}`. */
export interface PlanParams {
  id: string;
  name: string;
  price?: { amount: number; currency: string; interval?: "month" | "year" | null };
  limits?: Array<{
    id: string;
    name?: string;
    match: string[];
    limit: number;
    unit: string;
    period: Period;
  }>;
}

/** The answer to `DELETE /v1/plans/{id}`. */
export interface DeletedPlan {
  id: string;
  deleted: true;
}

export interface PackPrice {
  amount: number;
  currency: string;
}

export interface PackItem {
  id: string;
  match: string;
  amount: number;
  unit: string;
  /**
   * A balance granted from this item sends `credits.low` when its `remaining` drops to this or
   * below; `null`: never. (Optional only because servers before it did not send it.)
   */
  lowBalanceThreshold?: number | null;
}

export interface CreditPack {
  id: string;
  name: string;
  price: PackPrice;
  /** `null`: the pack's balances never expire. */
  expiresInDays: number | null;
  stripePriceId: string | null;
  archived: boolean;
  items: PackItem[];
  createdAt: Timestamp;
  updatedAt: Timestamp;
}

/** The body of `POST /v1/credit-packs` and `PUT /v1/credit-packs/{id}`. */
export interface CreditPackParams {
  id: string;
  name: string;
  price?: PackPrice;
  expiresInDays?: number | null;
  stripePriceId?: string | null;
  archived?: boolean;
  /** Item ids are generated when omitted. */
  items: Array<{
    id?: string;
    match: string;
    amount: number;
    unit: string;
    /** 1 to `amount`: `credits.low` fires when a balance of this item drops to it or below. */
    lowBalanceThreshold?: number | null;
  }>;
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

export interface Subscription {
  userId: string;
  planId: string;
  status: "active" | "canceled";
  currentPeriodStart: Timestamp;
  createdAt: Timestamp;
}

export interface UpsertSubscriptionParams {
  userId: string;
  planId: string;
}

// ---------------------------------------------------------------------------------------------
// Credits

export type BalanceStatus = "active" | "expired" | "revoked";
export type GrantSource = "purchase" | "grant" | "adjustment";

export interface Balance {
  id: string;
  userId: string;
  packId: string;
  packItemId: string;
  match: string;
  unit: string;
  granted: number;
  /** What can be spent now. */
  remaining: number;
  /** Held by pending reservations. */
  reserved: number;
  status: BalanceStatus;
  source: GrantSource;
  externalRef: string;
  notes: string | null;
  expiresAt: Timestamp | null;
  createdAt: Timestamp;
}

export interface GrantParams {
  userId: string;
  packId: string;
  /** With (user, pack), the grant's unique key: a repeat grants nothing. */
  externalRef: string;
  source: GrantSource;
  notes?: string | null;
  /** Overrides the pack's default; must be in the future. */
  expiresAt?: Timestamp | Date | null;
}

export interface Grant {
  userId: string;
  packId: string;
  externalRef: string;
  /** `false` on a repeat: nothing was granted and `balances` are the first grant's. */
  created: boolean;
  /** One per pack item, in item order. */
  balances: Balance[];
}

export interface RevokeParams {
  balanceId: string;
  reason: string;
}

// ---------------------------------------------------------------------------------------------
// Reservations

export interface PlanAllocation {
  source: "plan";
  limitId: string;
  balanceId?: null;
  amount: number;
}

export interface CreditsAllocation {
  source: "credits";
  balanceId: string;
  limitId?: null;
  amount: number;
}

export type Allocation = PlanAllocation | CreditsAllocation;

export type DenialReason =
  | "no_subscription"
  | "credits_exhausted"
  | "not_in_plan"
  | "plan_exhausted"
  | "plan_and_credits_exhausted";

export interface Available {
  plan: number;
  credits: number;
}

export type ReservationStatus = "pending" | "committed" | "released" | "expired";

/** A hold on a user's quota and credits: what an allowed `reserve` or `consume` answers. */
export interface Reservation {
  reservationId: string;
  allowed: true;
  reasons: [];
  status: ReservationStatus;
  userId: string;
  model: string;
  amount: number;
  allocations: Allocation[];
  expiresAt: Timestamp;
  createdAt: Timestamp;
  metadata: Json | null;
  /** `null` until committed. */
  committedAmount: number | null;
  response: Json | null;
  errorCode: string | null;
}

/** A refusal: nothing was held. A value, not an exception. */
export interface Denial {
  reservationId: null;
  allowed: false;
  reasons: DenialReason[];
  available: Available;
}

/** What `reserve` and `consume` answer: test `allowed` to tell which. */
export type ReserveResult = Reservation | Denial;

export interface ReserveParams {
  userId: string;
  model: string;
  amount: number;
  /** Default 600, at most 86400. */
  ttlSeconds?: number;
  metadata?: Json;
}

export interface ReserveOptions {
  ttlSeconds?: number;
  metadata?: Json;
}

export interface CheckParams {
  userId: string;
  model: string;
  amount: number;
}

/** `POST /v1/check`: what a reserve would do now, holding nothing. */
export interface CheckResult {
  allowed: boolean;
  reasons: DenialReason[];
  allocations: Allocation[];
  available: Available;
}

export interface ConsumeParams {
  userId: string;
  model: string;
  amount: number;
  metadata?: Json;
}

export interface CommitParams {
  /** Below the reserved amount gives the rest back; above it is refused. */
  amount?: number;
  response?: Json;
}

export interface ReleaseParams {
  errorCode?: string;
}

/** The hold that `withReservation` passes to its callback. */
export interface ReservationHold {
  /** The reservation as reserved, or as last committed or released through this hold. */
  readonly reservation: Reservation;
  readonly reservationId: string;
  /** Committed or released already: the end of the callback does nothing more. */
  readonly settled: boolean;
  /** Sent with the commit when the callback resolves, e.g. the provider's answer. */
  response?: Json;
  /** Commits now (`amount` below the reserved one gives the rest back); nothing more at the end. */
  commit(params?: CommitParams): Promise<Reservation>;
  /** Gives every unit back now; nothing more at the end. */
  release(params?: ReleaseParams): Promise<Reservation>;
}

// ---------------------------------------------------------------------------------------------
// Batch

/** One operation of `POST /v1/batch`: a single call's body plus `op` (and the reservation's id). */
export type BatchOperation =
  | ({ op: "reserve" } & ReserveParams)
  | ({ op: "consume" } & ConsumeParams)
  | ({ op: "check" } & CheckParams)
  | ({ op: "commit"; reservationId: string } & CommitParams)
  | ({ op: "release"; reservationId: string } & ReleaseParams);

/** The body of an error answer. */
export interface ErrorBody {
  error: { type: string; code: string; message: string; param: string | null };
}

/** One slot: what the single call would have answered, status and body. */
export interface BatchResult {
  status: number;
  body: ReserveResult | CheckResult | ErrorBody;
}

/** `POST /v1/batch` answers one result per operation, in order. */
export interface BatchResponse {
  results: BatchResult[];
}

// ---------------------------------------------------------------------------------------------
// Usage and ledger

export interface Counter {
  planId: string;
  limitId: string;
  name: string;
  match: string[];
  unit: string;
  period: Period;
  limit: number;
  used: number;
  reserved: number;
  remaining: number;
  periodStart: Timestamp | null;
  resetsAt: Timestamp | null;
}

export interface Usage {
  userId: string;
  subscription: Subscription | null;
  /** The current plan's counters; `[]` with no active subscription. */
  counters: Counter[];
  /** The active balances. */
  credits: Balance[];
}

export type LedgerEntryType =
  | "credits.granted"
  | "credits.revoked"
  | "credits.expired"
  | "usage.reserved"
  | "usage.committed"
  | "usage.released"
  | "usage.expired"
  | "subscription.updated"
  | "subscription.canceled";

export interface LedgerEntry {
  id: string;
  at: Timestamp;
  type: LedgerEntryType;
  userId: string;
  amount: number | null;
  balanceId: string | null;
  packId: string | null;
  limitId: string | null;
  reservationId: string | null;
  allocations: Allocation[] | null;
  externalRef: string | null;
  source: GrantSource | null;
  reason: string | null;
  notes: string | null;
}

export interface LedgerParams {
  /** 1 to 500, default 50. */
  limit?: number;
  /** A ledger entry id (`le_…`): the page after it (older entries). */
  startingAfter?: string;
}

// ---------------------------------------------------------------------------------------------
// Test clock

export interface TestClock {
  now: Timestamp;
}

// ---------------------------------------------------------------------------------------------
// Webhooks out: endpoints and the event list

/** An event type of `WebhookEvent`, or `"*"` (alone) for every type. */
export type WebhookEndpointEventType = WebhookEventType | "*";

/** Where vevee POSTs the events of one mode. The signing secret is only in `WebhookEndpointWithSecret`. */
export interface WebhookEndpoint {
  /** `we_…`. */
  id: string;
  url: string;
  /** The types it receives, or `["*"]`. */
  events: WebhookEndpointEventType[];
  description: string | null;
  /** `false` once disabled by an update, or by the server after 24 h of failed deliveries. */
  enabled: boolean;
  createdAt: Timestamp;
}

/** What `create` and `rotateSecret` answer: the only answers that carry the secret. */
export interface WebhookEndpointWithSecret extends WebhookEndpoint {
  /** `whsec_…`: pass it to `verifyWebhook`. Keep it: no other answer shows it again. */
  secret: string;
}

/** The body of `POST /v1/webhook-endpoints`. */
export interface WebhookEndpointCreateParams {
  /** `http://` or `https://`, at most 2048 characters. */
  url: string;
  /** At least one type, or `["*"]`. */
  events: WebhookEndpointEventType[];
  description?: string | null;
}

/** The body of `PATCH /v1/webhook-endpoints/{id}`: only the fields given change. */
export interface WebhookEndpointUpdateParams {
  url?: string;
  events?: WebhookEndpointEventType[];
  /** `null` removes it. */
  description?: string | null;
  enabled?: boolean;
}

/** The answer to `DELETE /v1/webhook-endpoints/{id}`. */
export interface DeletedWebhookEndpoint {
  id: string;
  deleted: true;
}

/** `GET /v1/webhook-endpoints`: every endpoint of the key's mode, oldest first (at most 16). */
export interface WebhookEndpointList {
  data: WebhookEndpoint[];
}

export interface EventListParams {
  /** 1 to 100, default 50. */
  limit?: number;
  /** An event id (`evt_…`): the page after it (older events). */
  startingAfter?: string;
  /** Only events of this type. */
  type?: WebhookEventType;
}
