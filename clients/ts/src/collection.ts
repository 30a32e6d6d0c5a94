/**
 * Handles on collections and topic subscriptions. A handle is a reference:
 * the collection stays synced while any handle of any tab is open, and the
 * server is told (`UNSYNC`, `UNSUB`) when the last one closes, so an app that
 * visits many collections over its life never runs into the server's
 * subscription limit. The replica may stay on disk after the last close.
 */
import { SyncgateError } from "./errors.js";
import type { Value } from "./types.js";

/** Where a subscription or a sync is: asked for, confirmed by the server, or refused (`code`). */
export type SubscriptionState = "subscribing" | "live" | "refused";

/** What a collection handle needs from its client. */
export interface CollectionHost {
  read(name: string, key: string): Value | undefined;
  readAll(name: string): [string, Value][];
  write(name: string, key: string, value: Value): Promise<string>;
  listen(name: string, listener: (keys: string[]) => void): () => void;
  status(name: string): Status;
  release(name: string): void;
}

/** A collection's or topic's status as the client tracks it. */
export class Status {
  state: SubscriptionState = "subscribing";
  code: string | undefined = undefined;
  /** Whether a whole snapshot from the server arrived at least once since the handle opened. */
  synced = false;
  #waiters: { resolve: () => void; reject: (e: Error) => void; synced: boolean }[] = [];

  readonly #what: { topic?: string; collection?: string };

  constructor(what: { topic?: string; collection?: string }) {
    this.#what = what;
  }

  update(state: SubscriptionState, code?: string, synced?: boolean): void {
    this.state = state;
    this.code = code;
    if (synced) this.synced = true;
    this.#waiters = this.#waiters.filter((w) => {
      if (state === "refused") {
        const name = this.#what.topic ?? this.#what.collection;
        w.reject(new SyncgateError(code ?? "refused", `${name} was refused`, this.#what));
      } else if (state === "live" && (!w.synced || this.synced)) w.resolve();
      else return true;
      return false;
    });
  }

  wait(synced: boolean): Promise<void> {
    if (this.state === "refused") {
      const name = this.#what.topic ?? this.#what.collection;
      return Promise.reject(new SyncgateError(this.code ?? "refused", `${name} was refused`, this.#what));
    }
    if (this.state === "live" && (!synced || this.synced)) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject, synced }));
  }
}

/** A reference to a synced collection; `T` is the type of its values (unchecked: the app's contract). */
export class Collection<T = Value> {
  #closed = false;

  readonly #host: CollectionHost;

  constructor(
    host: CollectionHost,
    readonly name: string,
  ) {
    this.#host = host;
  }

  /** The visible value of a record (`undefined` if absent or deleted). */
  get(key: string): T | undefined {
    return this.#host.read(this.name, key) as T | undefined;
  }

  /** Every visible record, sorted by key. */
  entries(): [string, T][] {
    return this.#host.readAll(this.name) as [string, T][];
  }

  /** Writes (visible at once, durable in storage when this resolves); resolves to the op id. */
  set(key: string, value: T): Promise<string> {
    return this.#host.write(this.name, key, value as Value);
  }

  delete(key: string): Promise<string> {
    return this.#host.write(this.name, key, null);
  }

  /**
   * Calls `listener` with the changed keys whenever records change (an empty
   * list: anything may have changed, e.g. the stored replica loaded); returns
   * an unsubscribe function.
   */
  subscribe(listener: (keys: string[]) => void): () => void {
    return this.#host.listen(this.name, listener);
  }

  /** `subscribing` until the server answers the SYNC, then `live`, or `refused` (see `code`). */
  get state(): SubscriptionState {
    return this.#host.status(this.name).state;
  }

  /** The refusal's code when `state` is `refused`. */
  get code(): string | undefined {
    return this.#host.status(this.name).code;
  }

  /** Whether the server's snapshot arrived: an empty `entries()` then means "empty", not "not loaded yet". */
  get synced(): boolean {
    return this.#host.status(this.name).synced;
  }

  /** Resolves once the server's whole snapshot is merged; rejects with a `SyncgateError` if the sync is refused. */
  whenSynced(): Promise<void> {
    return this.#host.status(this.name).wait(true);
  }

  /** Releases this handle; the last one closed stops the sync (`UNSYNC`). Closing twice is harmless. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#host.release(this.name);
  }
}

/** What `subscribe` returns: call it to unsubscribe; it also tells whether the subscription is live. */
export type Subscription = (() => void) & {
  readonly state: SubscriptionState;
  readonly code: string | undefined;
  /** Resolves once the server confirmed the subscription (publications from then on arrive); rejects if refused. */
  live(): Promise<void>;
};

export function subscription(unsubscribe: () => void, status: () => Status): Subscription {
  const handle = () => unsubscribe();
  Object.defineProperties(handle, {
    state: { get: () => status().state },
    code: { get: () => status().code },
    live: { value: () => status().wait(false) },
  });
  return handle as Subscription;
}

type Kind = "collection" | "topic";

/** What the server said of a sync or subscription, as every tab learns it from the leader's events. */
export interface Known {
  state: SubscriptionState;
  code?: string;
  synced: boolean;
}

/**
 * The statuses of this tab's collections and topics, and what the server
 * said of every sync and subscription of the connection (all tabs' — every
 * tab hears the leader's events). A handle opened on something already live
 * (another tab's, or one this tab had open) starts from what is known instead
 * of waiting for an answer that will not come: nothing new is sent for it.
 * One `Status` per name serves both: the open handles share it.
 */
export class StatusBook {
  /** This tab's open collections and topics. */
  readonly collections = new Map<string, Status>();
  readonly topics = new Map<string, Status>();
  /** What is known, by `kind:name` (open or not). */
  readonly #known = new Map<string, Status>();

  #status(kind: Kind, name: string): Status {
    return this.#known.get(`${kind}:${name}`) ?? (kind === "collection" ? this.collections : this.topics).get(name) ?? new Status({ [kind]: name });
  }

  open(kind: Kind, name: string): Status {
    const status = this.#status(kind, name);
    this.#known.set(`${kind}:${name}`, status);
    (kind === "collection" ? this.collections : this.topics).set(name, status);
    return status;
  }

  close(kind: Kind, name: string): void {
    (kind === "collection" ? this.collections : this.topics).delete(name);
  }

  get(kind: Kind, name: string): Status {
    return (kind === "collection" ? this.collections : this.topics).get(name) ?? new Status({ [kind]: name });
  }

  /** No tab wants it any more: the server was (or will be) told, and nothing about it is known. */
  forget(kind: Kind, name: string): void {
    this.#known.delete(`${kind}:${name}`);
  }

  update(kind: Kind, name: string, state: SubscriptionState, code?: string, synced?: boolean): void {
    const status = this.#status(kind, name);
    this.#known.set(`${kind}:${name}`, status);
    status.update(state, code, synced);
  }

  /** The connection dropped: everything is being asked for again. */
  disconnected(): void {
    for (const status of new Set([...this.#known.values(), ...this.collections.values(), ...this.topics.values()])) {
      if (status.state === "live") status.update("subscribing");
    }
  }

  snapshot(): [string, Known][] {
    return [...this.#known].map(([key, { state, code, synced }]) => [key, code === undefined ? { state, synced } : { state, code, synced }]);
  }

  /** What the leader knows, for a tab that just loaded. */
  learn(entries: [string, Known][]): void {
    for (const [key, known] of entries) {
      const split = key.indexOf(":");
      this.update(key.slice(0, split) as Kind, key.slice(split + 1), known.state, known.code, known.synced);
    }
  }
}
