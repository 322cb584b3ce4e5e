// Types for pollgate-client (pollgate-client.js). Checked by `tsc --noEmit`
// against example.ts in pollgate's test suite.

/** What a delivered message came with. */
export interface MessageMeta {
  /** The message's cursor (float seconds since the epoch, microsecond precision). */
  timestamp: number;
  /** Messages before this one were missed (trimmed, expired, or lost): resync from the app. */
  gap: boolean;
}

/** A `gap` event: delivery continues after `timestamp`. */
export interface GapMeta {
  timestamp: number;
  gap: true;
}

/** A failed poll or stream (`status`: the HTTP status, when there was one). */
export interface PollgateError extends Error {
  status?: number;
  retryAfter?: number;
}

/** The data pollgate delivers: the published JSON object, with `id` and `timestamp` set by pollgate. */
export interface Message {
  id: string;
  timestamp: number;
  [field: string]: unknown;
}

export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: { data: string; lastEventId: string }) => void): void;
  onerror: ((event: unknown) => void) | null;
  close(): void;
}

export interface PollgateClientOptions {
  /** The poll route's base URL, e.g. "/api/poll/". */
  url: string;
  /** The channel to follow. */
  channel: string;
  /** Start after this cursor (`0`: from the oldest buffered message). Default: from now. */
  since?: string | number;
  /** Seconds each long poll is held (default 30). */
  timeout?: number;
  /** Messages per answer (the batch form, `max=`). */
  max?: number;
  /** Headers sent with every poll (a route that needs them is polled, never streamed). */
  headers?: Record<string, string>;
  /** First backoff delay after an error, ms (default 250). */
  initialDelay?: number;
  /** Largest backoff delay, ms (default 10000). */
  maxDelay?: number;
  /** Time past `timeout` after which a poll is given up, ms (default 10000). */
  graceMs?: number;
  /** "auto" (default): stream where possible, else poll; "poll": never stream; "sse": always try. */
  transport?: "auto" | "poll" | "sse";
  /** The server's `poll.sse_heartbeat`, ms (default 15000). */
  heartbeatMs?: number;
  /** How long a stream may be reconnecting before `disconnected` is said, ms (default 5000). */
  reconnectGraceMs?: number;
  /** An EventSource implementation (Node: e.g. the `eventsource` package). Default: the global one. */
  EventSource?: new (url: string) => EventSourceLike;
  /** A fetch implementation. Default: the global one. */
  fetch?: typeof fetch;
}

export interface PollgateClientEvents {
  message: (data: Message, meta: MessageMeta) => void;
  error: (error: PollgateError) => void;
  connected: () => void;
  disconnected: () => void;
  gap: (meta: GapMeta) => void;
}

export declare class PollgateClient {
  constructor(options: PollgateClientOptions);
  /** The cursor: the timestamp of the last message delivered (as text). */
  since: string | undefined;
  /** What the client uses now. */
  readonly transport: "poll" | "sse";
  readonly url: string;
  readonly channel: string;
  on<E extends keyof PollgateClientEvents>(event: E, handler: PollgateClientEvents[E]): this;
  start(): this;
  stop(): this;
}

export default PollgateClient;
