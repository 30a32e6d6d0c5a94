/**
 * The state of one socket: request ids, what it subscribed and synced, its
 * pacer, and every timer it armed. Timers live here, not on the connector, so
 * a timer armed by a connection that died can never hold back the next one:
 * `dispose()` clears them all when the socket goes.
 */
import { Pacer } from "./pacer.js";
import type { PresenceMember, ServerMessage, SessionLimits, Value } from "./types.js";

/** A WebSocket constructor: the browser's, or `ws` in Node. */
export type WebSocketLike = new (url: string) => {
  binaryType: string;
  readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
};

/** Limits assumed of a server that announces none. */
export const DEFAULT_LIMITS: SessionLimits = { maxMessageBytes: 1024 * 1024, maxValueBytes: 256 * 1024, maxBatchOps: 1000 };

/** How a connection ended. `noToken`: the token source said "signed out". */
export type End = { code: number | null; reason: string; connected: boolean; noToken?: boolean; authCode?: string };

/** `full`: a SYNC sent without a cursor, answered with the whole state. */
export type Internal =
  | { kind: "sub"; topic: string }
  | { kind: "unsub"; topic: string }
  | { kind: "sync"; collection: string; full: boolean }
  | { kind: "unsync"; collection: string }
  | { kind: "presence"; topic: string; members: PresenceMember[] }
  | { kind: "replay" }
  | { kind: "ping" };

export interface Pending {
  resolve: (message: ServerMessage) => void;
  reject: (error: Error) => void;
}

/** What a topic subscription announced on this socket: plain, or present with `info`. */
export interface Announced {
  presence: boolean;
  info: Value | undefined;
}

export class Link {
  nextId = 1;
  connected = false;
  limits = DEFAULT_LIMITS;
  readonly internal = new Map<number, Internal>();
  readonly requests = new Map<number, Pending>();
  readonly topics = new Map<string, Announced>();
  readonly syncs = new Set<string>();
  readonly paging = new Map<string, { records: number; reset: boolean }>();
  replaying = false;
  authFail: { code: string; message: string } | null = null;
  /** Messages are handled one after another, in order, even when handling awaits storage. */
  queue: Promise<unknown> = Promise.resolve();
  /** Every frame leaves through it, within the rate the server announced. */
  readonly pacer: Pacer;
  /** Replay (and renewal of refused subscriptions) held back after a retryable refusal. */
  retryTimer: ReturnType<typeof setTimeout> | null = null;
  refreshTimer: ReturnType<typeof setTimeout> | null = null;
  /** Liveness: a PING after a quiet interval, and the deadline for any answer. */
  quietTimer: ReturnType<typeof setTimeout> | null = null;
  deadTimer: ReturnType<typeof setTimeout> | null = null;
  #ended = false;

  readonly #onEnd: (end: End) => void;

  constructor(
    readonly socket: InstanceType<WebSocketLike>,
    onEnd: (end: End) => void,
  ) {
    this.#onEnd = onEnd;
    this.pacer = new Pacer((frame) => {
      try {
        socket.send(frame);
      } catch {
        socket.close();
      }
    });
  }

  /** Ends this connection once: timers cleared, pending requests failed, the connector told. */
  end(end: End): void {
    if (this.#ended) return;
    this.#ended = true;
    this.dispose();
    for (const pending of this.requests.values()) pending.reject(new Error("disconnected"));
    this.requests.clear();
    this.#onEnd(end);
  }

  get alive(): boolean {
    return !this.#ended;
  }

  dispose(): void {
    this.pacer.clear();
    for (const timer of [this.retryTimer, this.refreshTimer, this.quietTimer, this.deadTimer]) {
      if (timer !== null) clearTimeout(timer);
    }
    this.retryTimer = this.refreshTimer = this.quietTimer = this.deadTimer = null;
  }
}
