/**
 * `SyncgateClient`: the public API. It owns the replica (loaded from and
 * saved to storage), coordinates the tabs sharing a storage name, and runs
 * the connection (`Connector`) in the one tab that leads. What each tab
 * holds (collection handles, topic handlers, presence) is counted here; the
 * leader's connector keeps the server's subscriptions equal to the union.
 */
import { DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import { valueProblem } from "./codec.js";
import { Collection, type CollectionHost, StatusBook, type Subscription, subscription } from "./collection.js";
import { Connector, type Host, type PingOptions, type WantedTopic } from "./connector.js";
import { Emitter } from "./emitter.js";
import { SyncgateError } from "./errors.js";
import { IndexedDBStorage } from "./idb.js";
import type { WebSocketLike } from "./link.js";
import { type Presence, PresenceBook, type PresenceChange } from "./presence.js";
import { Replica, type Settled } from "./replica.js";
import { randomId } from "./random.js";
import { MemoryStorage, type Storage, type StorageChange } from "./storage.js";
import { TabRelay } from "./relay.js";
import { Tabs } from "./tabs.js";
import type { ClientEvents, ConnectionState, TokenReason, Value, ValueCodec, WireRecord } from "./types.js";

export interface SyncgateClientOptions {
  /** `ws://host:port/ws` or `wss://…`. */
  url: string;
  /**
   * Called on every AUTH_REQUIRED ("connect"), before expiry ("refresh") and
   * after a 4001 ("rejected": do not return the same token). `null` stops the
   * client cleanly (signed out). After three refused tokens in a row the client stops.
   */
  getToken?: (reason: TokenReason) => Promise<string | null> | string | null;
  /**
   * Where the replica lives. Default: IndexedDB where the global `indexedDB`
   * exists (browsers, or Node with a polyfill installed), else memory.
   */
  storage?: "indexeddb" | "memory" | Storage;
  /**
   * The identity this client signs in as, when the app knows it: the default
   * storage name becomes per user, so one browser profile never shows one
   * user's replica to another.
   */
  user?: string;
  /** The storage name: tabs of one app share it (default `user:<user>`, or "default"). */
  name?: string;
  /** "message" (default): the token travels in the AUTH frame. "query": in the URL (`?token=`). */
  tokenIn?: "message" | "query";
  /** "cookie": rely on the server's cookie auth (same site, an allowed Origin). */
  credentials?: "token" | "cookie";
  /** A WebSocket implementation (required in Node 20: pass `ws`). */
  WebSocket?: WebSocketLike;
  backoff?: Partial<BackoffOptions>;
  /** Ops per replayed batch at most (batches are also cut to the server's message size). */
  replayBatch?: number;
  /** Liveness checks (default: PING after 25 s of silence, reconnect 10 s later without an answer); `false` turns them off. */
  ping?: Partial<PingOptions> | false;
  /**
   * End-to-end encryption: `new Encryption(keyring)` from `@syncgate/client/e2e`.
   * Values are sealed before they are stamped and queued; reads return plaintext.
   */
  encryption?: ValueCodec;
}

export { Collection } from "./collection.js";

/**
 * A write is queued, visible and sent when connected, but its local save
 * failed: it lives only in this page until the server acknowledges it
 * (`opSettled` for `opId`). Not a refusal: do not write it again.
 */
export class NotSavedError extends SyncgateError {
  constructor(
    readonly opId: string,
    reason: string,
  ) {
    super("not_saved", `${opId} queued but not saved: ${reason}`);
    this.name = "NotSavedError";
  }
}

export class SyncgateClient {
  /**
   * Resolves once the stored replica is loaded. Reads before it see an empty
   * replica; a `change` event (with no keys) follows the load for every stored
   * collection, so `collection.subscribe(render)` renders stored data offline too.
   */
  readonly ready: Promise<void>;
  /** @internal */ readonly events = new Emitter<ClientEvents>();
  /** @internal */ readonly storage: Storage;
  /** @internal */ replica: Replica;
  /** @internal */ readonly tabId = randomId(8);
  /** @internal */ readonly tabs: Tabs;
  /** @internal */ readonly relay: TabRelay;
  /** Handles this tab holds per collection, and the tabs (the leader's view, this one included) syncing each. */
  readonly #handles = new Map<string, number>();
  /** @internal */ readonly syncTabs = new Map<string, Map<string, true>>();
  /** @internal Topic → tab → what that tab wants (the leader's view). */
  readonly topicTabs = new Map<string, Map<string, WantedTopic>>();
  /** @internal */ readonly handlers = new Map<string, Set<(data: Value, from: string) => void>>();
  /** @internal */ readonly presences = new PresenceBook();
  /** @internal Per collection and topic of this tab, and what the server said of each. */ readonly statuses = new StatusBook();
  /** @internal */ readonly publishes = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  #nextPublish = 1;
  /** @internal */ connector: Connector | null = null;
  #leading = false;
  #started = false;
  /** @internal */ closed = false;
  /** @internal */ connectionState: ConnectionState = "idle";
  /** @internal */ identity: string | null = null;
  /** The identity whose replica the storage holds (set at the first AUTH_ACK). */
  #owner: string | null = null;
  #loaded = false;

  readonly #options: SyncgateClientOptions;

  constructor(options: SyncgateClientOptions) {
    this.#options = options;
    const name = options.name ?? (options.user !== undefined ? `user:${options.user}` : "default");
    const kind = options.storage ?? (typeof indexedDB === "undefined" ? "memory" : "indexeddb");
    this.storage = kind === "indexeddb" ? new IndexedDBStorage(name) : kind === "memory" ? new MemoryStorage() : kind;
    this.replica = new Replica(`tab-${this.tabId}`);
    this.relay = new TabRelay(this);
    this.tabs = new Tabs(name, (m) => this.relay.receive(m), () => void this.#becomeLeader());
    this.ready = this.#load();
    options.encryption?.attach(this);
  }

  async #load(): Promise<void> {
    const saved = await this.storage.load();
    this.#owner = saved.owner ?? null;
    let deviceId = saved.deviceId;
    if (deviceId === null) {
      deviceId = `d${randomId(10)}`;
      await this.storage.apply({ deviceId });
    }
    // One node id per tab: two tabs writing in the same millisecond never share a stamp.
    const replica = new Replica(`${deviceId}.${this.tabId}`, saved.clock);
    // Another identity's replica is kept for it, never shown or replayed here.
    const mine = this.#options.user === undefined || this.#owner === null || this.#owner === this.#options.user;
    if (mine) {
      for (const c of saved.collections) replica.loadCollection(c.name, c.records, c.cursor, Date.now());
      replica.addOps(saved.outbox);
    }
    // Writes made before the load finished (none: `write` waits) and ops other tabs added keep coming.
    this.replica = replica;
    this.#loaded = true;
    if (mine) for (const c of saved.collections) this.events.emit("change", { collection: c.name, keys: [] });
    this.tabs.post({ t: "hello" });
  }

  /** Starts connecting (in the tab that leads; the others follow it). Takes the tab lock now, not before. */
  connect(): void {
    if (this.#started || this.closed) return;
    this.#started = true;
    this.tabs.lead();
  }

  /** Stops the connection and closes the storage (the local replica and outbox stay); resolves once both are closed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.connector?.stop();
    this.tabs.close();
    await this.ready.catch(() => undefined);
    await this.storage.close();
  }

  /** Sign-out: closes, then deletes this identity's local replica and outbox (writes not yet sent are lost). */
  async clear(): Promise<void> {
    await this.close();
    await this.storage.destroy?.();
  }

  get state(): ConnectionState {
    return this.connectionState;
  }

  /** The identity the connection authenticated as (in a follower tab: the leader's), or null. */
  get sub(): string | null {
    return this.identity;
  }

  /** Writes not yet settled by the server (all tabs of this storage). */
  get pending(): number {
    return this.replica.outbox.length;
  }

  on<K extends keyof ClientEvents>(event: K, listener: (payload: ClientEvents[K]) => void): () => void {
    return this.events.on(event, listener);
  }

  /** A handle on a collection, synced while any handle is open; `close()` it when done. */
  collection<T = Value>(name: string): Collection<T> {
    const count = this.#handles.get(name) ?? 0;
    this.#handles.set(name, count + 1);
    if (count === 0) {
      this.statuses.open("collection", name);
      this.want(this.syncTabs, this.tabId, name, true);
      this.tabs.post({ t: "sync", tab: this.tabId, name });
    }
    return new Collection<T>(this.collectionHost, name);
  }

  /** @internal */
  readonly collectionHost: CollectionHost = {
    read: (name, key) => this.replica.get(name, key),
    readAll: (name) => this.replica.entries(name),
    write: (name, key, value) => this.write(name, key, value),
    listen: (name, listener) =>
      this.events.on("change", ({ collection, keys }) => {
        if (collection === name) listener(keys);
      }),
    status: (name) => this.statuses.get("collection", name),
    release: (name) => {
      const count = (this.#handles.get(name) ?? 1) - 1;
      if (count > 0) {
        this.#handles.set(name, count);
        return;
      }
      this.#handles.delete(name);
      this.statuses.close("collection", name);
      this.want(this.syncTabs, this.tabId, name, undefined);
      this.tabs.post({ t: "unsync", tab: this.tabId, name });
    },
  };

  /** Subscribes to a topic (renewed after reconnects); call the result to unsubscribe (`UNSUB` goes when the last handler does). */
  subscribe(topic: string, handler: (data: Value, from: string) => void): Subscription {
    let set = this.handlers.get(topic);
    if (!set) {
      this.handlers.set(topic, (set = new Set()));
      this.#announce(topic);
    }
    set.add(handler);
    let done = false;
    return subscription(
      () => {
        if (done) return;
        done = true;
        set.delete(handler);
        if (set.size > 0 || this.handlers.get(topic) !== set) return;
        this.handlers.delete(topic);
        this.#announce(topic);
      },
      () => this.statuses.get("topic", topic),
    );
  }

  /** Presence on a topic: this client is present (with `info`, if given) until the handle closes. */
  presence(topic: string, options: { info?: Value | undefined } = {}): Presence {
    const presence = this.presences.open(topic, options.info, () => this.#announce(topic));
    this.#announce(topic);
    return presence;
  }

  /** Tells the leader (maybe this tab) what this tab wants of a topic now. */
  #announce(topic: string): void {
    const presence = this.presences.wanted(topic);
    if (!this.handlers.has(topic) && !presence) {
      this.statuses.close("topic", topic);
      this.want(this.topicTabs, this.tabId, topic, undefined);
      this.tabs.post({ t: "unsub", tab: this.tabId, topic });
      return;
    }
    const want: WantedTopic = { presence: presence !== undefined, info: presence?.info };
    this.statuses.open("topic", topic);
    this.want(this.topicTabs, this.tabId, topic, want);
    this.postWant(topic, want);
  }

  /** @internal Asks the leader (any tab that leads) for what this tab wants of `topic`. */
  postWant(topic: string, want: WantedTopic): void {
    this.tabs.post({ t: "sub", tab: this.tabId, topic, presence: want.presence, ...(want.info !== undefined ? { info: want.info } : {}) });
  }

  /** Publishes to a topic; resolves on the server's OK, rejects with a `SyncgateError` on a refusal. */
  publish(topic: string, data: Value): Promise<void> {
    if (this.connector) return this.connector.publish(topic, data);
    return new Promise((resolve, reject) => {
      const req = this.#nextPublish++;
      this.publishes.set(req, { resolve, reject });
      this.tabs.post({ t: "pub", tab: this.tabId, req, topic, data });
    });
  }

  /** @internal Writes locally, saves, tells the other tabs and wakes the sender. */
  async write(collection: string, key: string, value: Value): Promise<string> {
    // Refused here, before it is queued: the server would refuse it as `invalid`.
    const problem = valueProblem(value);
    if (problem !== null) throw new SyncgateError("invalid", `the value ${problem}`, { collection });
    if (!this.#loaded) await this.ready;
    if (this.closed) throw new SyncgateError("closed", "the client is closed", { collection });
    // A follower tab stamps after what the leader last saw (a record from a fast clock).
    if (!this.#leading && this.storage.loadClock) {
      const stored = await this.storage.loadClock().catch(() => null);
      if (stored) this.replica.clock.observe({ ...stored, node: "" }, Number.MAX_SAFE_INTEGER);
    }
    // Visible at once (listeners re-render now); durable before this resolves.
    const op = this.replica.write(collection, key, value, Date.now());
    this.events.emit("change", { collection, keys: [key] });
    let saved: unknown = null;
    try {
      await this.storage.apply({ addOps: [op], clock: this.replica.clock.state() });
    } catch (e) {
      // The op stays queued: it may be on its way already, and discarding it
      // would tell the app "failed" about a write the server may accept.
      saved = e;
    }
    // Every other tab shows it too, whichever tab leads.
    this.tabs.post({ t: "outbox" });
    this.connector?.wake();
    if (saved !== null) throw new NotSavedError(op.opId, String(saved));
    return op.opId;
  }

  /**
   * @internal Records in the leader's view what `tab` wants of a collection or
   * topic (`want` undefined: nothing any more); when no tab wants it, what is
   * known of it is forgotten. Then brings the connection in line.
   */
  want<V>(tabsByName: Map<string, Map<string, V>>, tab: string, name: string, want: V | undefined): void {
    let tabs = tabsByName.get(name);
    if (want !== undefined) {
      if (!tabs) tabsByName.set(name, (tabs = new Map()));
      tabs.set(tab, want);
    } else if (tabs?.delete(tab) && tabs.size === 0) {
      tabsByName.delete(name);
      const topic = tabsByName === (this.topicTabs as Map<string, unknown>);
      this.statuses.forget(topic ? "topic" : "collection", name);
      if (topic) this.presences.forget(name);
    }
    this.connector?.wake();
  }

  async #becomeLeader(): Promise<void> {
    if (!this.#started || this.closed || this.#leading) return;
    this.#leading = true;
    await this.ready;
    if (this.closed) return;
    this.events.emit("leader", { leader: true });
    // What the previous leader (or another tab) left in the shared outbox.
    this.replica.addOps(await this.storage.loadOutbox());
    const ping = this.#options.ping === false ? null : { intervalMs: 25_000, timeoutMs: 10_000, ...this.#options.ping };
    this.connector = new Connector(this.#host(), {
      url: this.#options.url,
      getToken: this.#options.credentials === "cookie" && !this.#options.getToken ? undefined : this.#options.getToken,
      tokenIn: this.#options.tokenIn ?? "message",
      WebSocket: this.#options.WebSocket ?? (globalThis.WebSocket as unknown as WebSocketLike),
      backoff: { ...DEFAULT_BACKOFF, ...this.#options.backoff },
      replayBatch: this.#options.replayBatch ?? 100,
      ping,
    });
    this.tabs.post({ t: "leader" });
    this.connector.start();
  }

  /** @internal Applies a connection event in this tab (leader or follower). */
  applyEvent<K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]): void {
    if (event === "subscription") {
      const e = payload as ClientEvents["subscription"];
      this.statuses.update(e.kind, e.name, e.state, e.code);
    } else if (event === "synced") {
      this.statuses.update("collection", (payload as ClientEvents["synced"]).collection, "live", undefined, true);
    } else if (event === "disconnected") {
      this.statuses.disconnected();
    }
    this.events.emit(event, payload);
  }

  /** @internal */
  applyPresence(topic: string, change: PresenceChange): void {
    this.presences.apply(topic, change);
  }

  #host(): Host {
    const client = this;
    return {
      get replica() {
        return client.replica;
      },
      syncs: () => this.syncTabs.keys(),
      topics: () => {
        const wanted = new Map<string, WantedTopic>();
        for (const [topic, tabs] of this.topicTabs) {
          const present = [...tabs.values()].find((w) => w.presence);
          wanted.set(topic, present ?? { presence: false, info: undefined });
        }
        return wanted;
      },
      setState: (state) => {
        this.connectionState = state;
        if (state !== "connected" && state !== "disconnected" && state !== "connecting") this.identity = null;
        this.tabs.post({ t: "state", state, sub: this.identity });
        this.events.emit("state", { state, sub: this.identity });
      },
      emit: (event, payload) => {
        if (event === "connected") {
          this.identity = (payload as ClientEvents["connected"]).sub;
          this.tabs.post({ t: "state", state: "connected", sub: this.identity });
        }
        this.applyEvent(event, payload);
        this.relay.broadcast(event, payload);
      },
      deliver: (topic, data, from) => {
        this.relay.dispatch(topic, data, from);
        this.tabs.post({ t: "msg", topic, data, from });
      },
      merged: (collection, records, cursor, reset) => this.#merged(collection, records, cursor, reset),
      settled: (settled, retrying) => this.#settled(settled, retrying),
      syncRefused: async (collection, code) => {
        this.syncTabs.delete(collection);
        // A replica the identity may no longer read must not stay on screen or on disk.
        if (code === "forbidden") await this.#merged(collection, [], "", true, false);
      },
      identify: async (sub) => {
        const expected = this.#owner ?? this.#options.user ?? null;
        if (expected !== null && expected !== sub) {
          this.replica = new Replica(this.replica.clock.node);
          for (const name of this.#handles.keys()) this.events.emit("change", { collection: name, keys: [] });
          return false;
        }
        if (this.#owner === null) {
          this.#owner = sub;
          await this.#save({ owner: sub });
        }
        return true;
      },
      presence: (topic, change) => {
        this.applyPresence(topic, change);
        this.tabs.post({ t: "presence", topic, change });
      },
    };
  }

  /** Leader: server records into the replica and storage, then tell every tab. */
  async #merged(collection: string, records: WireRecord[], cursor: string, reset: boolean, keepCursor = true): Promise<void> {
    const change: StorageChange = {};
    if (reset) {
      this.replica.reset(collection);
      change.clear = [collection];
    }
    const changed = this.replica.merge(collection, records, Date.now());
    const moved = keepCursor && this.replica.setCursor(collection, cursor);
    // After a reset the stored layer is rebuilt from the snapshot as a whole.
    const put = reset ? this.replica.confirmed(collection) : changed;
    change.put = put.map((record) => ({ collection, record }));
    if (moved || reset) change.cursors = [{ collection, cursor: this.replica.cursor(collection) }];
    await this.#commit(change, [collection], []);
    if (changed.length > 0 || reset) this.events.emit("change", { collection, keys: changed.map((r) => r.key) });
  }

  /** Leader: settled ops out of storage (accepted ones into the confirmed layer), reported everywhere. */
  async #settled(settled: Settled[], retrying: { opId: string; code: string }[]): Promise<void> {
    // What the replica confirmed for each accepted key, not the op: an op that lost to a
    // newer record is accepted as a no-op, and its own value must never reach storage.
    const put: { collection: string; record: WireRecord }[] = [];
    for (const s of settled) {
      const record = s.ok ? this.replica.confirmedRecord(s.op.collection, s.op.key) : undefined;
      if (record) put.push({ collection: s.op.collection, record });
    }
    const removeOps = settled.map((s) => s.op.opId);
    const touched = [...new Set(settled.map((s) => s.op.collection))];
    await this.#commit({ removeOps, put }, touched, removeOps);
    const host = this.#host();
    for (const { op, ok, code, message } of settled) {
      const event: ClientEvents["opSettled"] = { opId: op.opId, ok, collection: op.collection, key: op.key };
      if (code !== undefined) event.code = code;
      if (message !== undefined) event.message = message;
      host.emit("opSettled", event);
    }
    for (const r of retrying) host.emit("opRetrying", r);
    for (const collection of touched) {
      const keys = settled.filter((s) => s.op.collection === collection).map((s) => s.op.key);
      this.events.emit("change", { collection, keys });
    }
  }

  /** Leader: saves a change with the clock, then tells the other tabs what to reload (and which ops settled). */
  async #commit(change: StorageChange, collections: string[], settled: string[]): Promise<void> {
    const clock = this.replica.clock.state();
    await this.#save({ ...change, clock });
    this.tabs.post({ t: "data", collections, settled, clock });
  }

  async #save(change: StorageChange): Promise<void> {
    try {
      await this.storage.apply(change);
    } catch (e) {
      const error = new SyncgateError("not_saved", `replica not saved: ${String(e)}`);
      this.events.emit("error", { message: error.message, error });
    }
  }
}
