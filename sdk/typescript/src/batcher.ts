// Automatic batching (`createClient({ batch: { maxOperations, maxDelayMs } })`): reservation calls
// made close together travel as one `POST /v1/batch`, and each caller still gets its own promise.
//
// A call waits at most `maxDelayMs` for company; a batch leaves at once when it holds
// `maxOperations` operations or would pass the server's body limit. The batch goes through the same
// transport as every call: one Idempotency-Key for the whole batch, retried on a network failure,
// 429 or 5xx, so that a retry replays the stored answer instead of holding twice. Each slot of the
// answer settles its own caller: a 2xx resolves with the body, anything else rejects with the error
// class the single call would have raised. A failure of the whole request rejects every caller of
// that batch with it.

import { VeveeError, errorFromResponse } from "./errors.js";
import type { ResponseInfo, Transport } from "./transport.js";
import type { BatchOperation, BatchResponse } from "./types.js";

export interface BatchOptions {
  /** Operations per request, 1 to 1000; default 100. */
  maxOperations?: number;
  /** How long the first call of a batch waits for others; default 2. 0 still gathers the calls of one tick. */
  maxDelayMs?: number;
}

/** API.md: a batch holds 1 to 1000 operations. */
export const BATCH_OPERATIONS_MAX = 1000;
/** The server refuses bodies over 1 MiB; this leaves room for the envelope. */
const BATCH_BYTES_MAX = 1_000_000;

interface Pending {
  op: BatchOperation;
  bytes: number;
  resolve: (answer: { data: unknown; info: ResponseInfo }) => void;
  reject: (error: unknown) => void;
}

export class Batcher {
  private queue: Pending[] = [];
  private queuedBytes = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly transport: Transport,
    private readonly maxOperations: number,
    private readonly maxDelayMs: number,
  ) {}

  /** Queues one operation; settles with its own slot of the batch answer. */
  submit<T>(op: BatchOperation): Promise<{ data: T; info: ResponseInfo }> {
    // Its share of the body, to keep every batch under the server's limit.
    const bytes = JSON.stringify(op).length + 1;
    return new Promise((resolve, reject) => {
      if (this.queue.length > 0 && this.queuedBytes + bytes > BATCH_BYTES_MAX) this.flush();
      this.queue.push({ op, bytes, resolve: resolve as Pending["resolve"], reject });
      this.queuedBytes += bytes;
      if (this.queue.length >= this.maxOperations) this.flush();
      else if (this.timer === null) this.timer = setTimeout(() => this.flush(), this.maxDelayMs);
    });
  }

  /** Sends what is queued now. */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const entries = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    if (entries.length > 0) void this.send(entries);
  }

  private async send(entries: Pending[]): Promise<void> {
    let answer: { data: BatchResponse; info: ResponseInfo };
    try {
      answer = await this.transport.request<BatchResponse>({
        method: "POST",
        path: "/v1/batch",
        body: { operations: entries.map((e) => e.op) },
      });
    } catch (error) {
      for (const entry of entries) entry.reject(error);
      return;
    }
    const { data, info } = answer;
    const results = Array.isArray(data?.results) ? data.results : [];
    entries.forEach((entry, i) => {
      const slot = results[i];
      if (slot === undefined || typeof slot.status !== "number") {
        entry.reject(
          new VeveeError({
            message: `vevee's batch answer has no result for operation ${i}`,
            status: info.status,
            type: "api_error",
            requestId: info.requestId,
            headers: info.headers,
            raw: data,
          }),
        );
        return;
      }
      if (slot.status >= 200 && slot.status < 300) {
        entry.resolve({ data: slot.body, info: { ...info, status: slot.status } });
      } else {
        entry.reject(errorFromResponse(slot.status, slot.body, info.headers, info.requestId, null));
      }
    });
  }
}
