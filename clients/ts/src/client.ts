/**
 * `SyncgateClient`: the public API. It owns the replica (loaded from and
 * saved to storage), coordinates the tabs sharing a storage name, and runs
 * the connection (`Connector`) in the one tab that leads.
 */
import { valueProblem } from "./codec.js";
import { DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import { Connector, type Host, type WebSocketLike } from "./connector.js";
import { Emitter } from "./emitter.js";
import { IndexedDBStorage } from "./idb.js";
import { Replica, type Settled } from "./replica.js";
import { MemoryStorage, type Storage, type StorageChange } from "./storage.js";
import { type TabMessage, Tabs } from "./tabs.js";
import type { ClientEvents, ConnectionState, TokenReason, Value, WireRecord } from "./types.js";

export interface SyncgateClientOptions {
  /** `ws://host:port/ws` or `wss://…`. */
  url: string;
  /**
   * Called on every AUTH_REQUIRED ("connect"), before expiry ("refresh") and
   * after a 4001 ("rejected": do not return the same token). `null` stops the
   * client cleanly (signed out).
   */
  getToken?: (reason: TokenReason) => Promise<string | null> | string | null;
  /** Where the replica lives: IndexedDB (the default in browsers), memory, or your own. */
  storage?: "indexeddb" | "memory" | Storage;
  /** The storage name: tabs of one app share it (default "default"). */
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
}

/** A collection of the local replica. */
export class Collection {
  constructor(
    private readonly client: SyncgateClient,
    readonly name: string,
  ) {}

  /** The visible value of a record (`undefined` if absent or deleted). */
  get(key: string): Value | undefined {
    return this.client.replicaFor(this.name).get(this.name, key);
  }

  /** Every visible record, sorted by key. */
  entries(): [string, Value][] {
    return this.client.replicaFor(this.name).entries(this.name);
  }

  /** Writes (visible at once, durable in storage when this resolves); resolves to the op id. */
  set(key: string, value: Value): Promise<string> {
    return this.client.write(this.name, key, value);
  }

  delete(key: string): Promise<string> {
    return this.client.write(this.name, key, null);
  }

  /** Calls `listener` with the changed keys whenever records change; returns an unsubscribe function. */
  subscribe(listener: (keys: string[]) => void): () => void {
    return this.client.on("change", ({ collection, keys }) => {
      if (collection === this.name) listener(keys);
    });
  }
}

/**
 * A write is queued, visible and sent when connected, but its local save
 * failed: it lives only in this page until the server acknowledges it
 * (`opSettled` for `opId`). Not a refusal: do not write it again.
 */
export class NotSavedError extends Error {
  constructor(
    readonly opId: string,
    reason: string,
  ) {
    super(`the write ${opId} is queued but could not be saved locally: ${reason}`);
    this.name = "NotSavedError";
  }
}

export class SyncgateClient {
  /** Resolves once the stored replica is loaded (reads before it see an empty replica). */
  readonly ready: Promise<void>;
  private readonly events = new Emitter<ClientEvents>();
  private readonly storage: Storage;
  private replica: Replica;
  private readonly tabId = Math.random().toString(36).slice(2, 10);
  private readonly tabs: Tabs;
  private readonly collections = new Map<string, Collection>();
  /** Collections synced by any tab (the leader's view) or by this one. */
  private readonly syncs = new Set<string>();
  /** Topic → tabs subscribed (the leader's view), and this tab's handlers. */
  private readonly topicTabs = new Map<string, Set<string>>();
  private readonly handlers = new Map<string, Set<(data: Value, from: string) => void>>();
  private readonly publishes = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private nextPublish = 1;
  private connector: Connector | null = null;
  /** Set once this tab starts leading (before the connector exists). */
  private leading = false;
  private started = false;
  private closed = false;
  private connectionState: ConnectionState = "idle";
  /** Whether the stored replica has been loaded (`ready` resolved). */
  private loaded = false;

  constructor(private readonly options: SyncgateClientOptions) {
    const name = options.name ?? "default";
    const kind = options.storage ?? (typeof indexedDB === "undefined" ? "memory" : "indexeddb");
    this.storage = kind === "indexeddb" ? new IndexedDBStorage(name) : kind === "memory" ? new MemoryStorage() : kind;
    this.replica = new Replica(`tab-${this.tabId}`);
    this.ready = this.load();
    this.tabs = new Tabs(name, (m) => void this.fromTab(m), () => void this.becomeLeader());
  }

  private async load(): Promise<void> {
    const saved = await this.storage.load();
    let deviceId = saved.deviceId;
    if (deviceId === null) {
      deviceId = `d${Math.random().toString(36).slice(2, 12)}`;
      await this.storage.apply({ deviceId });
    }
    // One node id per tab: two tabs writing in the same millisecond never share a stamp.
    this.replica = new Replica(`${deviceId}.${this.tabId}`, saved.clock);
    for (const c of saved.collections) this.replica.loadCollection(c.name, c.records, c.cursor);
    this.replica.addOps(saved.outbox);
    this.loaded = true;
  }

  /** Starts connecting (in the tab that leads; the others follow it). */
  connect(): void {
    if (this.started || this.closed) return;
    this.started = true;
    if (this.tabs.leader) void this.becomeLeader();
  }

  /** Stops the connection and releases the storage. */
  async close(): Promise<void> {
    this.closed = true;
    this.connector?.stop();
    this.tabs.close();
    this.storage.close();
  }

  get state(): ConnectionState {
    return this.connectionState;
  }

  /** Writes not yet settled by the server (all tabs of this storage). */
  get pending(): number {
    return this.replica.outbox.length;
  }

  on<K extends keyof ClientEvents>(event: K, listener: (payload: ClientEvents[K]) => void): () => void {
    return this.events.on(event, listener);
  }

  /** A collection, synced from now on (and after every reconnect, from its cursor). */
  collection(name: string): Collection {
    let collection = this.collections.get(name);
    if (!collection) {
      collection = new Collection(this, name);
      this.collections.set(name, collection);
      this.syncs.add(name);
      this.tabs.post({ t: "sync", name });
      this.connector?.wake();
    }
    return collection;
  }

  /** @internal */
  replicaFor(_collection: string): Replica {
    return this.replica;
  }

  /** Subscribes to a topic (renewed after reconnects); returns an unsubscribe function. */
  subscribe(topic: string, handler: (data: Value, from: string) => void): () => void {
    let set = this.handlers.get(topic);
    if (!set) this.handlers.set(topic, (set = new Set()));
    set.add(handler);
    this.wantTopic(this.tabId, topic);
    this.tabs.post({ t: "sub", tab: this.tabId, topic });
    return () => {
      set.delete(handler);
      if (set.size === 0) {
        this.handlers.delete(topic);
        this.tabs.post({ t: "unsub", tab: this.tabId, topic });
        this.topicTabs.get(topic)?.delete(this.tabId);
      }
    };
  }

  /** Publishes to a topic; resolves on the server's OK, rejects (with `code`) on a refusal. */
  publish(topic: string, data: Value): Promise<void> {
    if (this.connector) return this.connector.publish(topic, data);
    return new Promise((resolve, reject) => {
      const req = this.nextPublish++;
      this.publishes.set(req, { resolve, reject });
      this.tabs.post({ t: "pub", tab: this.tabId, req, topic, data });
    });
  }

  /** @internal Writes locally, saves, and wakes the sender. */
  async write(collection: string, key: string, value: Value): Promise<string> {
    // Refused here, before it is queued: the server would refuse it as `invalid`.
    const problem = valueProblem(value);
    if (problem !== null) throw new Error(`invalid value: the value ${problem}`);
    if (!this.loaded) await this.ready;
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
    if (this.connector) this.connector.wake();
    else this.tabs.post({ t: "outbox" });
    if (saved !== null) throw new NotSavedError(op.opId, String(saved));
    return op.opId;
  }

  private wantTopic(tab: string, topic: string): void {
    let tabs = this.topicTabs.get(topic);
    if (!tabs) this.topicTabs.set(topic, (tabs = new Set()));
    tabs.add(tab);
    this.connector?.wake();
  }

  private async becomeLeader(): Promise<void> {
    if (!this.started || this.closed || this.leading) return;
    this.leading = true;
    await this.ready;
    this.events.emit("leader", { leader: true });
    // What the previous leader (or another tab) left in the shared outbox.
    this.replica.addOps(await this.storage.loadOutbox());
    this.connector = new Connector(this.host(), {
      url: this.options.url,
      getToken: this.options.credentials === "cookie" && !this.options.getToken ? undefined : this.options.getToken,
      tokenIn: this.options.tokenIn ?? "message",
      WebSocket: this.options.WebSocket ?? (globalThis.WebSocket as unknown as WebSocketLike),
      backoff: { ...DEFAULT_BACKOFF, ...this.options.backoff },
      replayBatch: this.options.replayBatch ?? 100,
    });
    this.tabs.post({ t: "leader" });
    this.connector.start();
  }

  private host(): Host {
    const client = this;
    return {
      get replica() {
        return client.replica;
      },
      syncs: () => this.syncs,
      topics: () => [...this.topicTabs].filter(([, tabs]) => tabs.size > 0).map(([topic]) => topic),
      setState: (state) => (this.connectionState = state),
      emit: (event, payload) => {
        this.events.emit(event, payload);
        this.tabs.post({ t: "event", name: event, payload });
      },
      deliver: (topic, data, from) => {
        this.dispatch(topic, data, from);
        this.tabs.post({ t: "msg", topic, data, from });
      },
      merged: (collection, records, cursor, reset) => this.merged(collection, records, cursor, reset),
      settled: (settled, retrying) => this.settled(settled, retrying),
      syncRefused: (collection, code, message) => {
        this.syncs.delete(collection);
        this.events.emit("error", { message: `sync of ${collection} refused: ${code}: ${message}` });
      },
    };
  }

  private dispatch(topic: string, data: Value, from: string): void {
    for (const handler of this.handlers.get(topic) ?? []) {
      try {
        handler(data, from);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /** Leader: server records into the replica and storage, then tell every tab. */
  private async merged(collection: string, records: WireRecord[], cursor: string, reset: boolean): Promise<void> {
    const change: StorageChange = {};
    if (reset) {
      this.replica.reset(collection);
      change.clear = [collection];
    }
    const changed = this.replica.merge(collection, records, Date.now());
    const moved = this.replica.setCursor(collection, cursor);
    // After a reset the stored layer is rebuilt from the snapshot as a whole.
    const put = reset ? this.replica.confirmed(collection) : changed;
    change.put = put.map((record) => ({ collection, record }));
    if (moved || reset) change.cursors = [{ collection, cursor: this.replica.cursor(collection) }];
    change.clock = this.replica.clock.state();
    await this.save(change);
    this.tabs.post({ t: "data", collections: [collection], settled: [] });
    if (changed.length > 0 || reset) this.events.emit("change", { collection, keys: changed.map((r) => r.key) });
  }

  /** Leader: settled ops out of storage (accepted ones into the confirmed layer), reported everywhere. */
  private async settled(settled: Settled[], retrying: { opId: string; code: string }[]): Promise<void> {
    const accepted = settled.filter((s) => s.ok);
    await this.save({
      removeOps: settled.map((s) => s.op.opId),
      put: accepted.map((s) => ({
        collection: s.op.collection,
        record: { key: s.op.key, value: s.op.value, hlc: s.op.hlc },
      })),
    });
    const touched = [...new Set(settled.map((s) => s.op.collection))];
    this.tabs.post({ t: "data", collections: touched, settled: settled.map((s) => s.op.opId) });
    const host = this.host();
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

  private async save(change: StorageChange): Promise<void> {
    try {
      await this.storage.apply(change);
    } catch (e) {
      this.events.emit("error", { message: `the replica could not be saved: ${String(e)}` });
    }
  }

  /** Another tab said something. */
  private async fromTab(message: TabMessage): Promise<void> {
    const leading = this.connector !== null;
    switch (message.t) {
      case "outbox":
        this.replica.addOps(await this.storage.loadOutbox());
        for (const name of this.collections.keys()) this.events.emit("change", { collection: name, keys: [] });
        this.connector?.wake();
        return;
      case "data":
        if (leading) return;
        for (const name of message.collections) {
          const saved = await this.storage.loadCollection(name);
          this.replica.loadCollection(name, saved.records, saved.cursor);
        }
        this.replica.removeOps(message.settled);
        this.replica.addOps(await this.storage.loadOutbox());
        this.replica.removeOps(message.settled);
        for (const name of message.collections) this.events.emit("change", { collection: name, keys: [] });
        return;
      case "event":
        if (leading) return;
        if (message.name === "connecting" || message.name === "connected" || message.name === "disconnected" || message.name === "stopped") {
          this.connectionState = message.name === "connecting" ? "connecting" : message.name === "connected" ? "connected" : message.name === "stopped" ? "stopped" : "disconnected";
        }
        this.events.emit(message.name as keyof ClientEvents, message.payload as never);
        return;
      case "sub":
        this.wantTopic(message.tab, message.topic);
        return;
      case "unsub":
        this.topicTabs.get(message.topic)?.delete(message.tab);
        return;
      case "sync":
        if (!this.syncs.has(message.name)) {
          this.syncs.add(message.name);
          this.connector?.wake();
        }
        return;
      case "msg":
        this.dispatch(message.topic, message.data, message.from);
        return;
      case "pub":
        if (!this.connector) return;
        this.connector.publish(message.topic, message.data).then(
          () => this.tabs.post({ t: "pubResult", tab: message.tab, req: message.req, ok: true }),
          (e: Error & { code?: string }) => {
            const answer: TabMessage = { t: "pubResult", tab: message.tab, req: message.req, ok: false, message: e.message };
            if (e.code !== undefined) answer.code = e.code;
            this.tabs.post(answer);
          },
        );
        return;
      case "pubResult": {
        if (message.tab !== this.tabId) return;
        const pending = this.publishes.get(message.req);
        this.publishes.delete(message.req);
        if (message.ok) pending?.resolve();
        else pending?.reject(Object.assign(new Error(message.message ?? "refused"), { code: message.code }));
        return;
      }
      case "leader":
        // A new leader: tell it what this tab needs.
        for (const name of this.collections.keys()) this.tabs.post({ t: "sync", name });
        for (const topic of this.handlers.keys()) this.tabs.post({ t: "sub", tab: this.tabId, topic });
        return;
    }
  }
}
