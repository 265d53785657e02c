// One HTTP exchange with vevee, with retries.
//
// A request is retried when no answer came back (connection refused or cut, timeout), on 429
// (after `Retry-After` when the server sends one), on 5xx, and on 409 `idempotency_key_in_use` (the
// first attempt is still running on the server). The delay between attempts grows exponentially
// from `initialRetryDelayMs`, is capped at `maxRetryDelayMs`, and is jittered (half fixed, half
// random) so that many clients do not retry in step.
//
// Retrying a POST is safe because every POST carries an `Idempotency-Key` made once per logical call
// and sent unchanged, with the same body bytes, on every attempt: the server runs it at most once and
// replays its answer to the retries (`Idempotent-Replayed: true`). A retried `reserve` holds once.

import {
  VeveeConnectionError,
  VeveeError,
  VeveeTimeoutError,
  errorFromResponse,
} from "./errors.js";

export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface TransportConfig {
  apiKey: string;
  baseUrl: string;
  timeoutMs: number;
  maxRetries: number;
  initialRetryDelayMs: number;
  maxRetryDelayMs: number;
  /** A `Retry-After` longer than this is not waited for: the error is raised at once. */
  maxRetryAfterMs: number;
  fetch: FetchLike;
  userAgent: string | null;
}

/** Per-call options, the last argument of every client method. */
export interface RequestOptions {
  /** For a POST: the key to send instead of a generated one (e.g. your job's id). */
  idempotencyKey?: string;
  /** Overrides the client's `timeoutMs` for this call (per attempt). */
  timeoutMs?: number;
  /** Overrides the client's `maxRetries` for this call. */
  maxRetries?: number;
  /** Cancels the call, including waits between retries. */
  signal?: AbortSignal;
}

/** What came back with a result, besides its body. */
export interface ResponseInfo {
  status: number;
  requestId: string | null;
  /** The key sent with a POST; `null` for other methods. */
  idempotencyKey: string | null;
  /** The server replayed a stored answer (`Idempotent-Replayed: true`). */
  idempotentReplayed: boolean;
  /** How many attempts it took, 1 when the first one answered. */
  attempts: number;
  headers: Headers;
}

export interface HttpRequest {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  path: string;
  query?: Record<string, string | number | boolean | undefined | null>;
  body?: unknown;
}

export interface HttpResult<T> {
  data: T;
  info: ResponseInfo;
}

/** A `Retry-After` value (seconds or an HTTP date) in milliseconds, or `null`. */
export function parseRetryAfter(value: string | null, nowMs: number = Date.now()): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const at = Date.parse(text);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - nowMs);
}

/** The wait before retry number `retry` (0 for the first retry): capped exponential, half jittered. */
export function backoffMs(
  retry: number,
  initialMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** retry);
  return ceiling / 2 + random() * (ceiling / 2);
}

/** A fresh idempotency key: a random UUID where the platform has one. */
export function newIdempotencyKey(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === "function") return `vv_${c.randomUUID()}`;
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return `vv_${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function requestIdOf(headers: Headers): string | null {
  return headers.get("request-id") ?? headers.get("x-request-id");
}

function isRetryableAnswer(error: VeveeError): boolean {
  if (error.status === null) return false;
  if (error.status === 429 || error.status >= 500) return true;
  return error.status === 409 && error.code === "idempotency_key_in_use";
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal!));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export class Transport {
  constructor(readonly config: TransportConfig) {}

  async request<T>(req: HttpRequest, options: RequestOptions = {}): Promise<HttpResult<T>> {
    const c = this.config;
    const url = this.url(req);
    const maxRetries = options.maxRetries ?? c.maxRetries;
    const timeoutMs = options.timeoutMs ?? c.timeoutMs;
    const headers: Record<string, string> = {
      Accept: "application/json",
      Authorization: `Bearer ${c.apiKey}`,
    };
    if (c.userAgent !== null) headers["User-Agent"] = c.userAgent;
    // Serialized once, so that every attempt sends the very same bytes with the same key.
    let body: string | undefined;
    if (req.method !== "GET") {
      body = JSON.stringify(req.body ?? {});
      headers["Content-Type"] = "application/json";
    }
    let idempotencyKey: string | null = null;
    if (req.method === "POST") {
      idempotencyKey = options.idempotencyKey ?? newIdempotencyKey();
      headers["Idempotency-Key"] = idempotencyKey;
    }

    for (let attempt = 1; ; attempt++) {
      const retriesLeft = attempt <= maxRetries;
      let response: Response;
      let text: string;
      try {
        ({ response, text } = await this.attempt(url, req.method, headers, body, timeoutMs, options.signal));
      } catch (error) {
        if (options.signal?.aborted) throw error;
        const failure =
          error instanceof VeveeError ? error : connectionError(error, req, attempt);
        if (!retriesLeft) throw failure;
        await sleep(backoffMs(attempt - 1, c.initialRetryDelayMs, c.maxRetryDelayMs), options.signal);
        continue;
      }

      const requestId = requestIdOf(response.headers);
      const data = decode(text);
      if (response.ok) {
        if (data === undefined) {
          throw new VeveeError({
            message: `vevee answered ${response.status} with a body that is not JSON`,
            status: response.status,
            type: "api_error",
            requestId,
            headers: response.headers,
            raw: text,
          });
        }
        return {
          data: data as T,
          info: {
            status: response.status,
            requestId,
            idempotencyKey,
            idempotentReplayed: response.headers.get("idempotent-replayed") === "true",
            attempts: attempt,
            headers: response.headers,
          },
        };
      }

      const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
      const error = errorFromResponse(
        response.status,
        data ?? text,
        response.headers,
        requestId,
        retryAfterMs,
      );
      if (!retriesLeft || !isRetryableAnswer(error)) throw error;
      if (retryAfterMs !== null && retryAfterMs > c.maxRetryAfterMs) throw error;
      const wait =
        retryAfterMs ?? backoffMs(attempt - 1, c.initialRetryDelayMs, c.maxRetryDelayMs);
      await sleep(wait, options.signal);
    }
  }

  private url(req: HttpRequest): string {
    let url = this.config.baseUrl + req.path;
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(req.query ?? {})) {
      if (value !== undefined && value !== null) query.set(name, String(value));
    }
    const text = query.toString();
    if (text) url += `?${text}`;
    return url;
  }

  /** One attempt: the answer's status, headers and whole body, or a thrown network failure. */
  private async attempt(
    url: string,
    method: string,
    headers: Record<string, string>,
    body: string | undefined,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<{ response: Response; text: string }> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onAbort = () => controller.abort(signal!.reason);
    if (signal?.aborted) controller.abort(signal.reason);
    else signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const init: RequestInit = { method, headers, signal: controller.signal };
      if (body !== undefined) init.body = body;
      const response = await this.config.fetch(url, init);
      // The body is read under the same timeout: a connection cut mid-body is a network failure too.
      const text = await response.text();
      return { response, text };
    } catch (error) {
      if (timedOut) {
        throw new VeveeTimeoutError({
          message: `no answer from vevee within ${timeoutMs} ms (${method} ${url})`,
          type: "timeout",
          code: "timeout",
          cause: error,
        });
      }
      throw error;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

function connectionError(error: unknown, req: HttpRequest, attempts: number): VeveeConnectionError {
  const detail = describe(error);
  return new VeveeConnectionError({
    message: `could not reach vevee (${req.method} ${req.path}, ${attempts} attempt${attempts === 1 ? "" : "s"}): ${detail}`,
    type: "connection",
    code: "connection_failed",
    cause: error,
  });
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    if (cause instanceof Error && cause.message) return `${error.message}: ${cause.message}`;
    return error.message;
  }
  return String(error);
}

function decode(text: string): unknown {
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
