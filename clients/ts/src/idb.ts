/**
 * The replica in IndexedDB, one database per storage name, behind a thin
 * promise layer. Stores: `records` ([collection, key] → record), `cursors`
 * (collection → cursor), `outbox` (opId → op), `meta` (device id, clock).
 * Every `apply` is one readwrite transaction, resolved on `complete`: the
 * change is durable when the promise resolves.
 */
import type { PendingOp } from "./replica.js";
import { maxClock, type SavedCollection, type SavedState, type Storage, type StorageChange } from "./storage.js";
import type { WireRecord } from "./types.js";

const VERSION = 1;

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

interface StoredRecord extends WireRecord {
  collection: string;
}

export class IndexedDBStorage implements Storage {
  private readonly db: Promise<IDBDatabase>;

  constructor(
    private readonly name: string,
    private readonly factory: IDBFactory = globalThis.indexedDB,
  ) {
    if (!factory) throw new Error("IndexedDB is not available here; use storage: \"memory\"");
    const open = factory.open(`syncgate:${name}`, VERSION);
    open.onupgradeneeded = () => {
      const db = open.result;
      const records = db.createObjectStore("records", { keyPath: ["collection", "key"] });
      records.createIndex("byCollection", "collection");
      db.createObjectStore("cursors");
      db.createObjectStore("outbox", { keyPath: "opId" });
      db.createObjectStore("meta");
    };
    this.db = request(open);
  }

  async load(): Promise<SavedState> {
    const db = await this.db;
    const tx = db.transaction(["records", "cursors", "outbox", "meta"], "readonly");
    const [records, cursorKeys, cursorValues, outbox, deviceId, clock, owner] = await Promise.all([
      request(tx.objectStore("records").getAll() as IDBRequest<StoredRecord[]>),
      request(tx.objectStore("cursors").getAllKeys()),
      request(tx.objectStore("cursors").getAll() as IDBRequest<(string | null)[]>),
      request(tx.objectStore("outbox").getAll() as IDBRequest<PendingOp[]>),
      request(tx.objectStore("meta").get("deviceId") as IDBRequest<string | undefined>),
      request(tx.objectStore("meta").get("clock") as IDBRequest<{ millis: number; counter: number } | undefined>),
      request(tx.objectStore("meta").get("owner") as IDBRequest<string | undefined>),
    ]);
    const collections = new Map<string, SavedCollection>();
    const entry = (name: string): SavedCollection => {
      let c = collections.get(name);
      if (!c) collections.set(name, (c = { name, cursor: null, records: [] }));
      return c;
    };
    cursorKeys.forEach((key, i) => (entry(String(key)).cursor = cursorValues[i] ?? null));
    for (const { collection, key, value, hlc } of records) entry(collection).records.push({ key, value, hlc });
    return {
      deviceId: deviceId ?? null,
      owner: owner ?? null,
      clock: clock ?? { millis: 0, counter: 0 },
      collections: [...collections.values()],
      outbox,
    };
  }

  async apply(change: StorageChange): Promise<void> {
    const db = await this.db;
    const tx = db.transaction(["records", "cursors", "outbox", "meta"], "readwrite", { durability: "strict" });
    const records = tx.objectStore("records");
    const meta = tx.objectStore("meta");
    if (change.deviceId !== undefined) meta.put(change.deviceId, "deviceId");
    if (change.owner !== undefined) meta.put(change.owner, "owner");
    if (change.clock) {
      const next = change.clock;
      const read = meta.get("clock");
      read.onsuccess = () => meta.put(maxClock(read.result ?? { millis: 0, counter: 0 }, next), "clock");
    }
    // A reset drops the collection's records first; the puts are queued after the deletes.
    const cleared = (change.clear ?? []).map(
      (name) =>
        new Promise<void>((resolve) => {
          const keys = records.index("byCollection").getAllKeys(name);
          keys.onsuccess = () => {
            for (const key of keys.result) records.delete(key);
            resolve();
          };
          keys.onerror = () => resolve();
        }),
    );
    await Promise.all(cleared);
    for (const { collection, record } of change.put ?? []) records.put({ collection, ...record });
    for (const { collection, cursor } of change.cursors ?? []) tx.objectStore("cursors").put(cursor, collection);
    for (const op of change.addOps ?? []) tx.objectStore("outbox").put(op);
    for (const id of change.removeOps ?? []) tx.objectStore("outbox").delete(id);
    await done(tx);
  }

  async loadCollection(name: string): Promise<SavedCollection> {
    const db = await this.db;
    const tx = db.transaction(["records", "cursors"], "readonly");
    const [records, cursor] = await Promise.all([
      request(tx.objectStore("records").index("byCollection").getAll(name) as IDBRequest<StoredRecord[]>),
      request(tx.objectStore("cursors").get(name) as IDBRequest<string | null | undefined>),
    ]);
    return { name, cursor: cursor ?? null, records: records.map(({ key, value, hlc }) => ({ key, value, hlc })) };
  }

  async loadOutbox(): Promise<PendingOp[]> {
    const db = await this.db;
    return request(db.transaction("outbox", "readonly").objectStore("outbox").getAll() as IDBRequest<PendingOp[]>);
  }

  async loadClock(): Promise<{ millis: number; counter: number }> {
    const db = await this.db;
    const read = db.transaction("meta", "readonly").objectStore("meta").get("clock") as IDBRequest<{ millis: number; counter: number } | undefined>;
    return (await request(read)) ?? { millis: 0, counter: 0 };
  }

  async close(): Promise<void> {
    const db = await this.db.catch(() => null);
    db?.close();
  }

  /** Deletes the database (after `close`): resolves once it is gone. */
  async destroy(): Promise<void> {
    await this.close();
    await new Promise<void>((resolve, reject) => {
      const req = this.factory.deleteDatabase(`syncgate:${this.name}`);
      req.onsuccess = () => resolve();
      req.onerror = () => reject(req.error ?? new Error("IndexedDB deleteDatabase failed"));
    });
  }
}
