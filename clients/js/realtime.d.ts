// Type declarations for realtime.js (the realtime client of the tornado-app API).

/** One stored change, as every transport delivers it. */
export interface RealtimeEvent<T = Record<string, unknown>> {
  /** Deployment-wide sequence number: strictly increasing, assigned when the event is stored. */
  seq: number;
  /** `posts`, `products`, `post:{id}` or `user:{id}`. */
  channel: string;
  /** For example `post.created`, `product.stock_changed`, `comment.deleted`, `notification`. */
  type: string;
  /** The resource as the REST API shows it, or `{id}` for deletions. */
  data: T;
  /** ISO 8601 UTC time the event was stored. */
  created_at: string;
}

export type TransportName = 'websocket' | 'sse' | 'poll';

export interface Status {
  state: 'connecting' | 'open' | 'reconnecting' | 'closed';
  /** Failed attempts since the last successful connection (0 while open). */
  attempt: number;
  /** The transport in use, or the last one used. */
  transport: TransportName | null;
}

/** What `cursor_expired` said: the events after the client's cursor are no longer there. */
export interface ResetInfo {
  code: 'cursor_expired';
  message?: string;
  /** The oldest seq the log still holds. */
  oldest_seq?: number;
  /** The log's current epoch, where the server sends one. */
  epoch?: string;
}

export interface ConnectOptions {
  /** Server origin, such as `https://api.example.com`; defaults to the page's origin. */
  url?: string;
  /** A fixed access token. */
  token?: string;
  /** Returns a current access token; called again before the last one expires (JWT `exp`). */
  getToken?: () => string | Promise<string>;
  /** A WebSocket class: defaults to `globalThis.WebSocket` (browsers, Node 22+). */
  WebSocket?: unknown;
  /** A fetch function: defaults to `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Order of transports to try; a transport that cannot connect falls through to the next. */
  transports?: TransportName[];
  /** Exponential backoff with full jitter, in milliseconds (defaults 500 and 15000). */
  backoff?: { base?: number; max?: number };
  /** Seconds a long-poll request waits on the server (default 25, at most 60). */
  pollTimeout?: number;
  /** Milliseconds a transport may take to connect before the next one is tried (default 10000). */
  connectTimeout?: number;
  /** A cursor to start from, such as the `Event-Seq` header of the GET that loaded the page. */
  since?: number;
  /** The log's epoch that `since` belongs to (`Event-Epoch` header), where known. */
  epoch?: string;
  /**
   * The cursor has expired: reload the state the app shows. May return (or resolve to) the
   * `Event-Seq` of that reload, to resume from; otherwise the client continues from now.
   */
  onReset?: (info: ResetInfo) => number | void | Promise<number | void>;
  onStatus?: (status: Status) => void;
  /** Errors that do not end the client: a refused subscription, a handler that threw. */
  onError?: (error: Error) => void;
}

export interface Subscription {
  unsubscribe(): void;
}

export declare class RealtimeClient {
  constructor(options?: ConnectOptions);
  /** The position every delivered event is at or before; null until known. */
  readonly seq: number | null;
  readonly epoch: string | null;
  readonly status: Status;
  /** Each event on these channels, exactly once and in seq order. */
  subscribe<T = Record<string, unknown>>(channels: string | string[],
    onEvent: (event: RealtimeEvent<T>) => void, options?: { since?: number }): Subscription;
  /** Without `onEvent`, every handler of these channels. */
  unsubscribe(channels: string | string[], onEvent?: (event: RealtimeEvent) => void): void;
  /** Returns a function that removes the listener. */
  onStatus(listener: (status: Status) => void): () => void;
  close(): void;
}

export declare function connect(options?: ConnectOptions): RealtimeClient;
