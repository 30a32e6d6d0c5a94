/**
 * Several tabs of one app on one storage name: one tab holds the connection.
 *
 * The tab holding the Web Lock `syncgate:<name>` is the leader: it alone
 * talks to the server, replays the shared outbox and merges what the server
 * sends into the shared IndexedDB database. Every tab writes its own changes
 * to that database (with its own HLC node id) and tells the others over a
 * BroadcastChannel; the leader forwards subscriptions, publications and
 * events between the server and the other tabs. So no write is sent twice
 * (one sender), none is lost when a tab closes (the outbox is shared, and the
 * next leader replays it), and every tab shows the same state. Where Web Locks
 * are missing (Node), every client is its own leader.
 *
 * The lock is asked for in `lead()` (from `connect()`), never before: a tab
 * still on a login page must not hold the connection for the others.
 */
import type { Known } from "./collection.js";
import type { PresenceChange } from "./presence.js";
import type { ConnectionState, Value } from "./types.js";

export type TabMessage =
  | { t: "outbox" }
  | { t: "data"; collections: string[]; settled: string[]; clock: { millis: number; counter: number } }
  | { t: "event"; name: string; payload: unknown }
  | { t: "state"; state: ConnectionState; sub: string | null; known?: [string, Known][] }
  | { t: "hello" }
  | { t: "sub"; tab: string; topic: string; presence: boolean; info?: Value }
  | { t: "unsub"; tab: string; topic: string }
  | { t: "sync"; tab: string; name: string }
  | { t: "unsync"; tab: string; name: string }
  | { t: "msg"; topic: string; data: Value; from: string }
  | { t: "presence"; topic: string; change: PresenceChange }
  | { t: "pub"; tab: string; req: number; topic: string; data: Value }
  | { t: "pubResult"; tab: string; req: number; ok: boolean; code?: string; message?: string }
  | { t: "leader" };

interface LockManagerLike {
  request(name: string, options: { signal: AbortSignal }, callback: () => Promise<void>): Promise<void>;
}

export class Tabs {
  #channel: BroadcastChannel | null = null;
  readonly #abort = new AbortController();
  #release: (() => void) | null = null;
  leader = false;
  #asked = false;

  readonly #name: string;
  readonly #onMessage: (message: TabMessage) => void;
  readonly #onLeader: () => void;

  constructor(
    name: string,
    onMessage: (message: TabMessage) => void,
    onLeader: () => void,
  ) {
    this.#name = name;
    this.#onMessage = onMessage;
    this.#onLeader = onLeader;
    if (!Tabs.#locks() || typeof BroadcastChannel === "undefined") return;
    this.#channel = new BroadcastChannel(`syncgate:${name}`);
    this.#channel.onmessage = (event: MessageEvent<TabMessage>) => this.#onMessage(event.data);
  }

  static #locks(): LockManagerLike | undefined {
    return (globalThis.navigator as { locks?: LockManagerLike } | undefined)?.locks;
  }

  /** Asks to lead (once): at once where there are no other tabs, else when the lock is free. */
  lead(): void {
    if (this.#asked) return;
    this.#asked = true;
    const locks = Tabs.#locks();
    if (!locks || this.#channel === null) {
      this.leader = true;
      queueMicrotask(() => this.#onLeader());
      return;
    }
    locks
      .request(`syncgate:${this.#name}`, { signal: this.#abort.signal }, () => {
        this.leader = true;
        this.#onLeader();
        return new Promise<void>((resolve) => (this.#release = resolve));
      })
      .catch(() => undefined);
  }

  post(message: TabMessage): void {
    this.#channel?.postMessage(message);
  }

  close(): void {
    this.#abort.abort();
    this.#release?.();
    this.#channel?.close();
    this.#channel = null;
  }
}
