// `createClient`: every call of vevee's HTTP API v1 as a method.

import { BATCH_OPERATIONS_MAX, Batcher, type BatchOptions } from "./batcher.js";
import { VeveeConfigurationError, VeveeDeniedError } from "./errors.js";
import {
  Transport,
  type FetchLike,
  type HttpRequest,
  type RequestOptions,
  type ResponseInfo,
} from "./transport.js";
import type {
  Balance,
  BatchOperation,
  BatchResponse,
  CheckParams,
  CheckResult,
  CommitParams,
  ConsumeParams,
  CreditPack,
  CreditPackParams,
  DeletedPlan,
  DeletedWebhookEndpoint,
  EventListParams,
  Grant,
  GrantParams,
  LedgerEntry,
  LedgerParams,
  List,
  Plan,
  PlanParams,
  ReleaseParams,
  Reservation,
  ReservationHold,
  ReserveOptions,
  ReserveParams,
  ReserveResult,
  RevokeParams,
  Subscription,
  TestClock,
  UpsertSubscriptionParams,
  Usage,
  WebhookEndpoint,
  WebhookEndpointCreateParams,
  WebhookEndpointList,
  WebhookEndpointUpdateParams,
  WebhookEndpointWithSecret,
} from "./types.js";
import type { WebhookEvent } from "./webhooks.js";

export const VERSION = "0.1.0";

export interface ClientOptions {
  /** A secret key (`sk_test_…`, `sk_live_…`) on a server; a publishable key (`pk_…`) in a browser. */
  apiKey: string;
  /** Default `http://127.0.0.1:8080`. */
  baseUrl?: string;
  /** Per attempt; default 30 000. */
  timeoutMs?: number;
  /** Retries after the first attempt; default 2. */
  maxRetries?: number;
  /** The first retry waits between half of this and this; default 500. */
  initialRetryDelayMs?: number;
  /** The cap of the exponential backoff; default 8 000. */
  maxRetryDelayMs?: number;
  /** A `Retry-After` longer than this is not waited for; default 60 000. */
  maxRetryAfterMs?: number;
  /** Default: the platform's `fetch`. */
  fetch?: FetchLike;
  /**
   * Automatic batching, off by default: `reserve`, `consume`, `check`/`canUse`, `commit` and
   * `release` calls made within `maxDelayMs` of each other go as one `POST /v1/batch` of up to
   * `maxOperations`; each call still settles on its own. A call with per-call options
   * (`idempotencyKey`, `signal`, `timeoutMs`, `maxRetries`) goes alone. `true` takes the defaults.
   */
  batch?: boolean | BatchOptions;
}

/** A result with what came back with it. `lastResponse` is not enumerable (not in JSON, not in deepEqual). */
export type WithResponse<T> = T & { readonly lastResponse: ResponseInfo };

/** A page of a list that is also an async iterator over every item of every page from there on. */
export type PagePromise<T> = Promise<WithResponse<List<T>>> & AsyncIterable<T>;

export interface VeveeClient {
  /** Holds `amount` of `model` for `userId`: plan first, then credits. A denial is a value: test `allowed`. */
  reserve(
    userId: string,
    model: string,
    amount: number,
    options?: ReserveOptions & RequestOptions,
  ): Promise<WithResponse<ReserveResult>>;
  reserve(params: ReserveParams, options?: RequestOptions): Promise<WithResponse<ReserveResult>>;
  /**
   * Reserves, runs `fn` with the hold, and settles it: commits when `fn` resolves (unless `fn`
   * committed or released it itself, e.g. `hold.commit({ amount: 2 })` for a partial commit),
   * releases when `fn` throws (`errorCode`: the error's string `code`, else its `name`) and
   * rethrows. A denial throws `VeveeDeniedError` without calling `fn`. Resolves to what `fn` does.
   */
  withReservation<T>(
    params: ReserveParams,
    fn: (hold: ReservationHold) => Promise<T> | T,
    options?: RequestOptions,
  ): Promise<T>;
  /** Spends a reservation (all of it, or `amount` of it; the rest goes back). */
  commit(
    reservationId: string,
    params?: CommitParams,
    options?: RequestOptions,
  ): Promise<WithResponse<Reservation>>;
  /** Gives every unit of a reservation back to the counter or balance it came from. */
  release(
    reservationId: string,
    params?: ReleaseParams,
    options?: RequestOptions,
  ): Promise<WithResponse<Reservation>>;
  getReservation(reservationId: string, options?: RequestOptions): Promise<WithResponse<Reservation>>;
  /** What a reserve would do now, holding nothing. */
  check(userId: string, model: string, amount: number, options?: RequestOptions): Promise<WithResponse<CheckResult>>;
  check(params: CheckParams, options?: RequestOptions): Promise<WithResponse<CheckResult>>;
  /** `check` by its walkthrough name. Resolves to `{ allowed, reasons, … }`, not a boolean. */
  canUse(userId: string, model: string, amount: number, options?: RequestOptions): Promise<WithResponse<CheckResult>>;
  canUse(params: CheckParams, options?: RequestOptions): Promise<WithResponse<CheckResult>>;
  /** A reserve and commit in one step: the committed reservation, or the denial. */
  consume(
    userId: string,
    model: string,
    amount: number,
    options?: { metadata?: ReserveOptions["metadata"] } & RequestOptions,
  ): Promise<WithResponse<ReserveResult>>;
  consume(params: ConsumeParams, options?: RequestOptions): Promise<WithResponse<ReserveResult>>;
  /** The user's counters and active balances, for a UI; `match` keeps those overlapping it (e.g. `image.*`). */
  usage(userId: string, match?: string | null, options?: RequestOptions): Promise<WithResponse<Usage>>;
  /** A page of the user's ledger, newest first; `for await` over it walks every later page too. */
  ledger(userId: string, params?: LedgerParams, options?: RequestOptions): PagePromise<LedgerEntry>;

  getSubscription(userId: string, options?: RequestOptions): Promise<WithResponse<Subscription>>;
  /** Puts the user on `planId`: the same plan changes nothing, another starts a new period now. */
  upsertSubscription(params: UpsertSubscriptionParams, options?: RequestOptions): Promise<WithResponse<Subscription>>;
  upsertSubscription(userId: string, planId: string, options?: RequestOptions): Promise<WithResponse<Subscription>>;
  /** Cancels; the user's credits stay spendable. */
  cancelSubscription(userId: string | { userId: string }, options?: RequestOptions): Promise<WithResponse<Subscription>>;

  credits: {
    /** Grants a pack: one balance per item. A repeat of (user, pack, externalRef) grants nothing (`created: false`). */
    grant(params: GrantParams, options?: RequestOptions): Promise<WithResponse<Grant>>;
    /** Takes what is left of a balance (e.g. on a refund). */
    revoke(params: RevokeParams, options?: RequestOptions): Promise<WithResponse<Balance>>;
    revoke(balanceId: string, params: { reason: string }, options?: RequestOptions): Promise<WithResponse<Balance>>;
    getBalance(balanceId: string, options?: RequestOptions): Promise<WithResponse<Balance>>;
  };

  plans: {
    list(options?: RequestOptions): Promise<WithResponse<List<Plan>>>;
    get(planId: string, options?: RequestOptions): Promise<WithResponse<Plan>>;
    /** `POST /v1/plans`: 409 `plan_exists` if the id is taken. */
    create(params: PlanParams, options?: RequestOptions): Promise<WithResponse<Plan>>;
    /** `PUT /v1/plans/{id}`: creates or replaces. */
    upsert(params: PlanParams, options?: RequestOptions): Promise<WithResponse<Plan>>;
    /** 409 `plan_in_use` while an active subscription uses it. */
    delete(planId: string, options?: RequestOptions): Promise<WithResponse<DeletedPlan>>;
  };

  creditPacks: {
    list(params?: { includeArchived?: boolean }, options?: RequestOptions): Promise<WithResponse<List<CreditPack>>>;
    get(packId: string, options?: RequestOptions): Promise<WithResponse<CreditPack>>;
    /** `POST /v1/credit-packs`: 409 `pack_exists` if the id is taken. */
    create(params: CreditPackParams, options?: RequestOptions): Promise<WithResponse<CreditPack>>;
    /** `PUT /v1/credit-packs/{id}`: creates or replaces; changes future grants only. */
    upsert(params: CreditPackParams, options?: RequestOptions): Promise<WithResponse<CreditPack>>;
    archive(packId: string, options?: RequestOptions): Promise<WithResponse<CreditPack>>;
  };

  /** Where vevee POSTs events (API.md, "Webhooks out"), per mode: the key's. At most 16 per mode. */
  webhookEndpoints: {
    /**
     * `POST /v1/webhook-endpoints`. The answer is the only one besides `rotateSecret` that carries
     * the signing `secret`: store it for `verifyWebhook`. A 17th endpoint is 409 `too_many_endpoints`.
     */
    create(params: WebhookEndpointCreateParams, options?: RequestOptions): Promise<WithResponse<WebhookEndpointWithSecret>>;
    /** Every endpoint of the key's mode, oldest first, without secrets. */
    list(options?: RequestOptions): Promise<WithResponse<WebhookEndpointList>>;
    /** Without the secret; 404 `endpoint_not_found`. */
    get(endpointId: string, options?: RequestOptions): Promise<WithResponse<WebhookEndpoint>>;
    /** `get` by its Stripe name. */
    retrieve(endpointId: string, options?: RequestOptions): Promise<WithResponse<WebhookEndpoint>>;
    /** `PATCH`: changes only the fields given (`description: null` removes it; `enabled: true` re-enables). */
    update(
      endpointId: string,
      params: WebhookEndpointUpdateParams,
      options?: RequestOptions,
    ): Promise<WithResponse<WebhookEndpoint>>;
    delete(endpointId: string, options?: RequestOptions): Promise<WithResponse<DeletedWebhookEndpoint>>;
    /** A new secret; for 24 h the old one signs too (two signatures), so receivers can switch over. */
    rotateSecret(endpointId: string, options?: RequestOptions): Promise<WithResponse<WebhookEndpointWithSecret>>;
  };

  events: {
    /**
     * A page of the last 30 days' events of the key's mode, newest first, the same objects that
     * webhooks deliver (for apps that poll); `for await` over it walks every later page too.
     */
    list(params?: EventListParams, options?: RequestOptions): PagePromise<WebhookEvent>;
  };

  /** Test keys only. */
  testClock: {
    get(options?: RequestOptions): Promise<WithResponse<TestClock>>;
    /** Moves the app's test-mode clock forward: expiry, period resets and TTLs follow it. */
    advance(seconds: number | { seconds: number }, options?: RequestOptions): Promise<WithResponse<TestClock>>;
  };

  /**
   * Up to 1000 reservation operations in one request (`POST /v1/batch`): one result per operation,
   * in order, each the status and body the single call would have answered. An operation that
   * failed is a result, not an exception; only a failure of the whole request throws.
   */
  batch(operations: BatchOperation[], options?: RequestOptions): Promise<WithResponse<BatchResponse>>;

  /** Any other call of the API, with the same auth, retries and idempotency keys. */
  request<T>(req: HttpRequest, options?: RequestOptions): Promise<WithResponse<T>>;
}

/** True in a browser page or a web worker (not in Node, Deno or Bun). */
export function isBrowser(): boolean {
  const g = globalThis as {
    window?: { document?: unknown };
    document?: unknown;
    WorkerGlobalScope?: unknown;
    importScripts?: unknown;
  };
  if (typeof g.window === "object" && g.window !== null && typeof g.window.document === "object") {
    return true;
  }
  return typeof g.WorkerGlobalScope === "function" && typeof g.importScripts === "function";
}

export function createClient(options: ClientOptions): VeveeClient {
  if (!options || typeof options.apiKey !== "string" || options.apiKey.trim() === "") {
    throw new VeveeConfigurationError({
      message: "createClient needs { apiKey }: a secret key (sk_test_… or sk_live_…) on your server",
      type: "configuration",
      code: "api_key_missing",
    });
  }
  const apiKey = options.apiKey.trim();
  if (isBrowser() && !apiKey.startsWith("pk_")) {
    throw new VeveeConfigurationError({
      message:
        "refusing to use a vevee secret key in a browser: anyone who opens the page could read it " +
        "and spend or grant credits for every user. Call vevee from your server with the secret key, " +
        "and use a publishable key (pk_test_… or pk_live_…) in the browser; it can only read the " +
        "catalog (plans and credit packs).",
      type: "configuration",
      code: "secret_key_in_browser",
    });
  }
  const platformFetch = (globalThis as { fetch?: FetchLike }).fetch;
  const fetchImpl = options.fetch ?? (platformFetch ? platformFetch.bind(globalThis) : undefined);
  if (!fetchImpl) {
    throw new VeveeConfigurationError({
      message: "no fetch on this platform: pass createClient({ fetch }) or use Node 18 or later",
      type: "configuration",
      code: "fetch_missing",
    });
  }
  const transport = new Transport({
    apiKey,
    baseUrl: (options.baseUrl ?? "http://127.0.0.1:8080").replace(/\/+$/, ""),
    timeoutMs: positive(options.timeoutMs, 30_000, "timeoutMs"),
    maxRetries: nonNegative(options.maxRetries, 2, "maxRetries"),
    initialRetryDelayMs: nonNegative(options.initialRetryDelayMs, 500, "initialRetryDelayMs"),
    maxRetryDelayMs: nonNegative(options.maxRetryDelayMs, 8_000, "maxRetryDelayMs"),
    maxRetryAfterMs: nonNegative(options.maxRetryAfterMs, 60_000, "maxRetryAfterMs"),
    fetch: fetchImpl,
    // Browsers forbid setting User-Agent.
    userAgent: isBrowser() ? null : `vevee-sdk-typescript/${VERSION}`,
  });

  async function call<T>(req: HttpRequest, options?: RequestOptions): Promise<WithResponse<T>> {
    const { data, info } = await transport.request<T>(req, options);
    if (typeof data === "object" && data !== null) {
      Object.defineProperty(data, "lastResponse", { value: info, enumerable: false });
    }
    return data as WithResponse<T>;
  }

  const post = <T>(path: string, body: unknown, options?: RequestOptions) =>
    call<T>({ method: "POST", path, body }, options);

  const batcher = batchOptions(options.batch, transport);

  /** A reservation call: through the batcher when it is on and the call has no options of its own. */
  async function hold<T>(path: string, op: BatchOperation, options?: RequestOptions): Promise<WithResponse<T>> {
    if (batcher === null || !isEmpty(options)) {
      const { op: _op, ...rest } = op as BatchOperation & { reservationId?: string };
      const body: Record<string, unknown> = rest;
      delete body.reservationId;
      return post<T>(path, body, options);
    }
    const { data, info } = await batcher.submit<T>(op);
    if (typeof data === "object" && data !== null) {
      Object.defineProperty(data, "lastResponse", { value: info, enumerable: false });
    }
    return data as WithResponse<T>;
  }
  const get = <T>(path: string, query?: HttpRequest["query"], options?: RequestOptions) =>
    call<T>({ method: "GET", path, query }, options);

  function checkCall(a: string | CheckParams, b?: string | RequestOptions, c?: number, d?: RequestOptions) {
    if (typeof a === "string") {
      return hold<CheckResult>("/v1/check", { op: "check", userId: a, model: b as string, amount: c as number }, d);
    }
    return hold<CheckResult>(
      "/v1/check",
      { op: "check", userId: a.userId, model: a.model, amount: a.amount },
      b as RequestOptions | undefined,
    );
  }

  /** A list call's first page, also an async iterator that fetches each later page after the last id. */
  function paged<T extends { id: string }>(
    fetchPage: (startingAfter: string | undefined) => Promise<WithResponse<List<T>>>,
    startingAfter: string | undefined,
  ): PagePromise<T> {
    const first = (async () => fetchPage(startingAfter))();
    // Nobody may await the first page when iterating: keep its rejection from going unhandled.
    first.catch(() => undefined);
    async function* all(): AsyncGenerator<T> {
      let page = await first;
      for (;;) {
        yield* page.data;
        const last = page.data[page.data.length - 1];
        if (!page.hasMore || last === undefined) return;
        page = await fetchPage(last.id);
      }
    }
    return Object.assign(first, { [Symbol.asyncIterator]: all }) as PagePromise<T>;
  }

  function ledger(userId: string, params: LedgerParams = {}, options?: RequestOptions): PagePromise<LedgerEntry> {
    const path = `/v1/users/${seg(userId)}/ledger`;
    return paged(
      (startingAfter) => get<List<LedgerEntry>>(path, { limit: params.limit, startingAfter }, options),
      params.startingAfter,
    );
  }

  function listEvents(params: EventListParams = {}, options?: RequestOptions): PagePromise<WebhookEvent> {
    return paged(
      (startingAfter) =>
        get<List<WebhookEvent>>("/v1/events", { limit: params.limit, startingAfter, type: params.type }, options),
      params.startingAfter,
    );
  }

  const getEndpoint = async (endpointId: string, options?: RequestOptions) =>
    get<WebhookEndpoint>(`/v1/webhook-endpoints/${seg(endpointId)}`, undefined, options);

  const client: VeveeClient = {
    reserve(
      a: string | ReserveParams,
      b?: string | RequestOptions,
      c?: number,
      d?: ReserveOptions & RequestOptions,
    ): Promise<WithResponse<ReserveResult>> {
      if (typeof a === "string") {
        const { ttlSeconds, metadata, ...request } = d ?? {};
        const op = { op: "reserve" as const, userId: a, model: b as string, amount: c as number, ttlSeconds, metadata };
        return hold("/v1/reservations", op, request);
      }
      const { userId, model, amount, ttlSeconds, metadata } = a;
      const op = { op: "reserve" as const, userId, model, amount, ttlSeconds, metadata };
      return hold("/v1/reservations", op, b as RequestOptions | undefined);
    },
    commit: async (reservationId, params = {}, options) =>
      hold(
        `/v1/reservations/${seg(reservationId)}/commit`,
        { op: "commit", reservationId, amount: params.amount, response: params.response },
        options,
      ),
    release: async (reservationId, params = {}, options) =>
      hold(
        `/v1/reservations/${seg(reservationId)}/release`,
        { op: "release", reservationId, errorCode: params.errorCode },
        options,
      ),
    getReservation: async (reservationId, options) =>
      get(`/v1/reservations/${seg(reservationId)}`, undefined, options),
    check: checkCall as VeveeClient["check"],
    canUse: checkCall as VeveeClient["canUse"],
    consume(
      a: string | ConsumeParams,
      b?: string | RequestOptions,
      c?: number,
      d?: { metadata?: ReserveOptions["metadata"] } & RequestOptions,
    ): Promise<WithResponse<ReserveResult>> {
      if (typeof a === "string") {
        const { metadata, ...request } = d ?? {};
        return hold("/v1/consume", { op: "consume", userId: a, model: b as string, amount: c as number, metadata }, request);
      }
      const { userId, model, amount, metadata } = a;
      return hold("/v1/consume", { op: "consume", userId, model, amount, metadata }, b as RequestOptions | undefined);
    },
    usage: async (userId, match, options) =>
      get(`/v1/users/${seg(userId)}/usage`, { match }, options),
    ledger,

    getSubscription: async (userId, options) => get(`/v1/users/${seg(userId)}/subscription`, undefined, options),
    upsertSubscription(
      a: string | UpsertSubscriptionParams,
      b?: string | RequestOptions,
      c?: RequestOptions,
    ): Promise<WithResponse<Subscription>> {
      const [userId, planId, options] =
        typeof a === "string" ? [a, b as string, c] : [a.userId, a.planId, b as RequestOptions | undefined];
      return call({ method: "PUT", path: `/v1/users/${seg(userId)}/subscription`, body: { planId } }, options);
    },
    cancelSubscription: async (user, options) => {
      const userId = typeof user === "string" ? user : user.userId;
      return call({ method: "DELETE", path: `/v1/users/${seg(userId)}/subscription` }, options);
    },

    credits: {
      grant: async (params, options) => {
        const { userId, packId, externalRef, source, notes, expiresAt } = params;
        return post("/v1/credits/grants", {
          userId,
          packId,
          externalRef,
          source,
          notes,
          expiresAt: expiresAt instanceof Date ? expiresAt.toISOString() : expiresAt,
        }, options);
      },
      revoke(
        a: string | RevokeParams,
        b?: { reason: string } | RequestOptions,
        c?: RequestOptions,
      ): Promise<WithResponse<Balance>> {
        const [balanceId, reason, options] =
          typeof a === "string"
            ? [a, (b as { reason: string }).reason, c]
            : [a.balanceId, a.reason, b as RequestOptions | undefined];
        return post(`/v1/credits/balances/${seg(balanceId)}/revoke`, { reason }, options);
      },
      getBalance: async (balanceId, options) => get(`/v1/credits/balances/${seg(balanceId)}`, undefined, options),
    },

    plans: {
      list: async (options) => get("/v1/plans", undefined, options),
      get: async (planId, options) => get(`/v1/plans/${seg(planId)}`, undefined, options),
      create: async (params, options) => post("/v1/plans", planBody(params), options),
      upsert: async (params, options) =>
        call({ method: "PUT", path: `/v1/plans/${seg(params.id)}`, body: planBody(params) }, options),
      delete: async (planId, options) => call({ method: "DELETE", path: `/v1/plans/${seg(planId)}` }, options),
    },

    creditPacks: {
      list: async (params = {}, options) =>
        get("/v1/credit-packs", { includeArchived: params.includeArchived ? "true" : undefined }, options),
      get: async (packId, options) => get(`/v1/credit-packs/${seg(packId)}`, undefined, options),
      create: async (params, options) => post("/v1/credit-packs", packBody(params), options),
      upsert: async (params, options) =>
        call({ method: "PUT", path: `/v1/credit-packs/${seg(params.id)}`, body: packBody(params) }, options),
      archive: async (packId, options) => post(`/v1/credit-packs/${seg(packId)}/archive`, {}, options),
    },

    webhookEndpoints: {
      create: async (params, options) => {
        const { url, events, description } = params;
        return post("/v1/webhook-endpoints", { url, events, description }, options);
      },
      list: async (options) => get("/v1/webhook-endpoints", undefined, options),
      get: getEndpoint,
      retrieve: getEndpoint,
      update: async (endpointId, params, options) => {
        // Only the fields given: an absent one stays as it is (JSON.stringify leaves out undefined).
        const { url, events, description, enabled } = params;
        return call(
          { method: "PATCH", path: `/v1/webhook-endpoints/${seg(endpointId)}`, body: { url, events, description, enabled } },
          options,
        );
      },
      delete: async (endpointId, options) =>
        call({ method: "DELETE", path: `/v1/webhook-endpoints/${seg(endpointId)}` }, options),
      rotateSecret: async (endpointId, options) =>
        post(`/v1/webhook-endpoints/${seg(endpointId)}/rotate-secret`, {}, options),
    },

    events: {
      list: listEvents,
    },

    testClock: {
      get: async (options) => get("/v1/test/clock", undefined, options),
      advance: async (seconds, options) =>
        post("/v1/test/clock/advance", { seconds: typeof seconds === "number" ? seconds : seconds.seconds }, options),
    },

    batch: async (operations, options) => post("/v1/batch", { operations }, options),

    request: call,

    async withReservation<T>(
      params: ReserveParams,
      fn: (hold: ReservationHold) => Promise<T> | T,
      options?: RequestOptions,
    ): Promise<T> {
      const result = await client.reserve(params, options);
      if (!result.allowed) {
        throw new VeveeDeniedError({
          userId: params.userId,
          model: params.model,
          amount: params.amount,
          reasons: result.reasons,
          available: result.available,
          requestId: result.lastResponse.requestId,
        });
      }
      const hold = reservationHold(client, result);
      let value: T;
      try {
        value = await fn(hold);
      } catch (error) {
        if (!hold.settled) {
          try {
            await hold.release({ errorCode: errorCodeOf(error) });
          } catch {
            // The callback's own error is the one to report; the server releases the hold at its
            // TTL anyway.
          }
        }
        throw error;
      }
      if (!hold.settled) await hold.commit();
      return value;
    },
  };
  return client;
}

function reservationHold(client: VeveeClient, reserved: Reservation): ReservationHold {
  let reservation = reserved;
  let settled = false;
  const hold: ReservationHold = {
    get reservation() {
      return reservation;
    },
    get reservationId() {
      return reserved.reservationId;
    },
    get settled() {
      return settled;
    },
    response: undefined,
    async commit(params = {}) {
      const response = params.response !== undefined ? params.response : hold.response;
      reservation = await client.commit(reserved.reservationId, { amount: params.amount, response });
      settled = true;
      return reservation;
    },
    async release(params = {}) {
      reservation = await client.release(reserved.reservationId, params);
      settled = true;
      return reservation;
    },
  };
  return hold;
}

/** What a failed callback's release records as `errorCode`: the error's `code`, else its `name`. */
function errorCodeOf(error: unknown): string {
  if (typeof error === "object" && error !== null) {
    const { code, name } = error as { code?: unknown; name?: unknown };
    if (typeof code === "string" && code !== "") return code;
    if (typeof name === "string" && name !== "") return name;
  }
  return "error";
}

function batchOptions(option: boolean | BatchOptions | undefined, transport: Transport): Batcher | null {
  if (option === undefined || option === false) return null;
  const o = option === true ? {} : option;
  const maxOperations = o.maxOperations ?? 100;
  if (!Number.isInteger(maxOperations) || maxOperations < 1 || maxOperations > BATCH_OPERATIONS_MAX) {
    throw new VeveeConfigurationError({
      message: `batch.maxOperations must be an integer from 1 to ${BATCH_OPERATIONS_MAX}`,
      type: "configuration",
      code: "invalid_option",
    });
  }
  return new Batcher(transport, maxOperations, nonNegative(o.maxDelayMs, 2, "batch.maxDelayMs"));
}

/** No per-call option set: the call may share a batch. */
function isEmpty(options: RequestOptions | undefined): boolean {
  return options === undefined || Object.values(options).every((v) => v === undefined);
}

// The writable fields only, so that a plan or pack read from the API can be edited and written back
// (the server refuses unknown fields such as `createdAt`).
function planBody(p: PlanParams): PlanParams {
  return { id: p.id, name: p.name, price: p.price, limits: p.limits };
}

function packBody(p: CreditPackParams): CreditPackParams {
  const { id, name, price, expiresInDays, stripePriceId, archived, items } = p;
  return { id, name, price, expiresInDays, stripePriceId, archived, items };
}

/** One path segment, escaped. */
function seg(value: string): string {
  if (typeof value !== "string" || value === "") {
    throw new VeveeConfigurationError({
      message: `expected a non-empty id, got ${JSON.stringify(value)}`,
      type: "configuration",
      code: "id_missing",
    });
  }
  return encodeURIComponent(value);
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new VeveeConfigurationError({ message: `${name} must be a positive number`, type: "configuration", code: "invalid_option" });
  }
  return value;
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0) {
    throw new VeveeConfigurationError({ message: `${name} must be a number from 0`, type: "configuration", code: "invalid_option" });
  }
  return value;
}
