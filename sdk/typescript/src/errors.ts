// Errors. Every failure the client raises is a `VeveeError`. An API refusal (a non-2xx answer) is a
// subclass chosen by the answer's `error.type`; a request that got no answer at all is a
// `VeveeConnectionError` (or its `VeveeTimeoutError`), whose `status` is `null`. A reservation that
// is denied is not an error: `reserve` resolves to `{ allowed: false, reasons }`.

/** The error types of API.md, plus the client's own. */
export type VeveeErrorType =
  | "invalid_request"
  | "authentication"
  | "permission"
  | "not_found"
  | "method_not_allowed"
  | "conflict"
  | "payload_too_large"
  | "unprocessable"
  | "rate_limited"
  | "internal"
  | "api_error"
  | "connection"
  | "timeout"
  | "configuration"
  | "denied"
  | "webhook_verification";

export interface VeveeErrorInit {
  message: string;
  status?: number | null;
  type: VeveeErrorType | (string & {});
  code?: string | null;
  param?: string | null;
  requestId?: string | null;
  headers?: Headers | null;
  /** The decoded error body, when there was one. */
  raw?: unknown;
  cause?: unknown;
}

export class VeveeError extends Error {
  /** The HTTP status; `null` when no answer came back. */
  readonly status: number | null;
  /** `error.type` of the answer (`invalid_request`, `conflict`, …), or `connection`, `timeout`, `configuration`. */
  readonly type: string;
  /** `error.code` of the answer, e.g. `reservation_not_pending`; the client's own code otherwise. */
  readonly code: string | null;
  /** The request field at fault, when one is. */
  readonly param: string | null;
  /** The server's request id (`Request-Id` header), when it sent one. */
  readonly requestId: string | null;
  readonly headers: Headers | null;
  readonly raw: unknown;

  constructor(init: VeveeErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.status = init.status ?? null;
    this.type = init.type;
    this.code = init.code ?? null;
    this.param = init.param ?? null;
    this.requestId = init.requestId ?? null;
    this.headers = init.headers ?? null;
    this.raw = init.raw;
    Object.setPrototypeOf(this, new.target.prototype);
  }
}

/** 400 `invalid_request`: a field is missing or invalid (see `param`). */
export class VeveeInvalidRequestError extends VeveeError {}
/** 401 `authentication`: the API key is missing or unknown. */
export class VeveeAuthenticationError extends VeveeError {}
/** 403 `permission`: e.g. a publishable key outside the catalog, or a live key on the test clock. */
export class VeveePermissionError extends VeveeError {}
/** 404 `not_found`. */
export class VeveeNotFoundError extends VeveeError {}
/** 405 `method_not_allowed`. */
export class VeveeMethodNotAllowedError extends VeveeError {}
/** 409 `conflict`: e.g. `reservation_not_pending`, `plan_in_use`, `idempotency_key_reused`. */
export class VeveeConflictError extends VeveeError {}
/** 413 `payload_too_large`. */
export class VeveePayloadTooLargeError extends VeveeError {}
/** 422 `unprocessable`. */
export class VeveeUnprocessableError extends VeveeError {}
/** 429 `rate_limited`, after the client's retries. `retryAfterMs` is the server's `Retry-After`. */
export class VeveeRateLimitError extends VeveeError {
  readonly retryAfterMs: number | null;
  constructor(init: VeveeErrorInit & { retryAfterMs?: number | null }) {
    super(init);
    this.retryAfterMs = init.retryAfterMs ?? null;
  }
}
/** 5xx `internal`, after the client's retries. */
export class VeveeInternalError extends VeveeError {}
/** An answer that does not fit any known type (e.g. an HTML page from a proxy). */
export class VeveeAPIError extends VeveeError {}

/** No answer: the connection failed or was cut before an answer came back. */
export class VeveeConnectionError extends VeveeError {}
/** No answer within `timeoutMs`. */
export class VeveeTimeoutError extends VeveeConnectionError {}
/** The client was set up in a way that cannot work or is unsafe (e.g. a secret key in a browser). */
export class VeveeConfigurationError extends VeveeError {}

/**
 * `withReservation` could not hold the units, so its callback did not run. `reasons` says why
 * (`plan_exhausted`: offer an upgrade; otherwise offer credits), `available` what plan and credits
 * could still give. `reserve` itself never throws this: there a denial is a value.
 */
export class VeveeDeniedError extends VeveeError {
  readonly userId: string;
  readonly model: string;
  readonly amount: number;
  readonly reasons: string[];
  readonly available: { plan: number; credits: number };
  constructor(init: {
    userId: string;
    model: string;
    amount: number;
    reasons: string[];
    available: { plan: number; credits: number };
    requestId?: string | null;
  }) {
    super({
      message: `${init.userId} may not use ${init.amount} of ${init.model}: ${init.reasons.join(", ") || "denied"}`,
      status: 200,
      type: "denied",
      code: init.reasons[0] ?? "denied",
      requestId: init.requestId ?? null,
    });
    this.userId = init.userId;
    this.model = init.model;
    this.amount = init.amount;
    this.reasons = [...init.reasons];
    this.available = { ...init.available };
  }
}

/** Why `verifyWebhook` refused a request. */
export type WebhookVerificationReason =
  /** `webhook-id`, `webhook-timestamp` or `webhook-signature` is missing or empty. */
  | "missing_header"
  /** `webhook-timestamp` is not a whole number of Unix seconds. */
  | "bad_timestamp"
  /** `webhook-timestamp` is further from now than the tolerance (stale, or from the future). */
  | "timestamp_out_of_tolerance"
  /** No `v1` signature in `webhook-signature` matches: tampered body, or another secret. */
  | "no_matching_signature"
  /** The secret is not `whsec_` + base64 (e.g. an API key was passed instead). */
  | "bad_secret"
  /** The payload is not the raw body (a string or bytes), or the signed body is not an event. */
  | "invalid_payload";

/**
 * `verifyWebhook` refused the request: answer it with a 4xx and do not act on it. `reason` says
 * why; `type` is `webhook_verification` and `code` is the reason too.
 */
export class WebhookVerificationError extends VeveeError {
  readonly reason: WebhookVerificationReason;
  constructor(reason: WebhookVerificationReason, message: string) {
    super({ message, type: "webhook_verification", code: reason });
    this.reason = reason;
  }
}

const BY_TYPE: Record<string, new (init: VeveeErrorInit) => VeveeError> = {
  invalid_request: VeveeInvalidRequestError,
  authentication: VeveeAuthenticationError,
  permission: VeveePermissionError,
  not_found: VeveeNotFoundError,
  method_not_allowed: VeveeMethodNotAllowedError,
  conflict: VeveeConflictError,
  payload_too_large: VeveePayloadTooLargeError,
  unprocessable: VeveeUnprocessableError,
  rate_limited: VeveeRateLimitError,
  internal: VeveeInternalError,
};

const TYPE_BY_STATUS: Record<number, VeveeErrorType> = {
  400: "invalid_request",
  401: "authentication",
  403: "permission",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  413: "payload_too_large",
  422: "unprocessable",
  429: "rate_limited",
};

/** The error for a non-2xx answer, from its status and body (`{"error": {type, code, message, param}}`). */
export function errorFromResponse(
  status: number,
  body: unknown,
  headers: Headers,
  requestId: string | null,
  retryAfterMs: number | null,
): VeveeError {
  const detail = isObject(body) && isObject(body.error) ? body.error : null;
  const type =
    typeof detail?.type === "string"
      ? detail.type
      : (TYPE_BY_STATUS[status] ?? (status >= 500 ? "internal" : "api_error"));
  const init: VeveeErrorInit & { retryAfterMs: number | null } = {
    status,
    type,
    code: typeof detail?.code === "string" ? detail.code : null,
    param: typeof detail?.param === "string" ? detail.param : null,
    message:
      typeof detail?.message === "string"
        ? detail.message
        : `vevee answered ${status} without an error body`,
    requestId,
    headers,
    raw: body,
    retryAfterMs,
  };
  const Class = BY_TYPE[type] ?? VeveeAPIError;
  return new Class(init);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}
