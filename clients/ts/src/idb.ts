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
const STORES = ["records", "cursors", "outbox", "meta"];
type Clock = { millis: number; counter: number };
const ZERO: Clock = { millis: 0, counter: 0 };

/** A request (or a transaction, `complete`d) as a promise. */
function settle<T>(target: IDBRequest<T> | IDBTransaction, done: "onsuccess" | "oncomplete" = "onsuccess"): Promise<T> {
  return new Promise((resolve, reject) => {
    const fail = () => reject(target.error ?? new Error("IndexedDB failed"));
    (target as unknown as Record<string, () => void>)[done] = () => resolve((target as IDBRequest<T>).result);
    target.onerror = fail;
    if (done === "oncomplete") (target as IDBTransaction).onabort = fail;
  });
}

interface StoredRecord extends WireRecord {
  collection: string;
}

export class IndexedDBStorage implements Storage {
  readonly #db: Promise<IDBDatabase>;
  readonly #delete: () => IDBOpenDBRequest;

  constructor(name: string, factory: IDBFactory = globalThis.indexedDB) {
    if (!factory) throw new Error('no IndexedDB here: use storage: "memory"');
    const open = factory.open(`syncgate:${name}`, VERSION);
    open.onupgradeneeded = () => {
      const db = open.result;
      db.createObjectStore("records", { keyPath: ["collection", "key"] }).createIndex("byCollection", "collection");
      db.createObjectStore("cursors");
      db.createObjectStore("outbox", { keyPath: "opId" });
      db.createObjectStore("meta");
    };
    this.#db = settle(open);
    this.#delete = () => factory.deleteDatabase(`syncgate:${name}`);
  }

  /** One read-only transaction over `stores`: `read` issues its requests, all answered together. */
  async #read<T extends unknown[]>(stores: string[], read: (store: (name: string) => IDBObjectStore) => { [K in keyof T]: IDBRequest<T[K]> }): Promise<T> {
    const tx = (await this.#db).transaction(stores, "readonly");
    return Promise.all(read((name) => tx.objectStore(name)).map((r) => settle(r))) as Promise<T>;
  }

  async load(): Promise<SavedState> {
    const [records, cursorKeys, cursorValues, outbox, deviceId, clock, owner] = await this.#read<
      [StoredRecord[], IDBValidKey[], (string | null)[], PendingOp[], string | undefined, Clock | undefined, string | undefined]
    >(STORES, (store) => [
      store("records").getAll(),
      store("cursors").getAllKeys(),
      store("cursors").getAll(),
      store("outbox").getAll(),
      store("meta").get("deviceId"),
      store("meta").get("clock"),
      store("meta").get("owner"),
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
      clock: clock ?? ZERO,
      collections: [...collections.values()],
      outbox,
    };
  }

  async apply(change: StorageChange): Promise<void> {
    const tx = (await this.#db).transaction(STORES, "readwrite", { durability: "strict" });
    const records = tx.objectStore("records");
    const meta = tx.objectStore("meta");
    const outbox = tx.objectStore("outbox");
    if (change.deviceId !== undefined) meta.put(change.deviceId, "deviceId");
    if (change.owner !== undefined) meta.put(change.owner, "owner");
    if (change.clock) {
      const next = change.clock;
      const read = meta.get("clock");
      read.onsuccess = () => meta.put(maxClock(read.result ?? ZERO, next), "clock");
    }
    // A reset drops the collection's records first; the puts are queued after the deletes.
    for (const name of change.clear ?? []) {
      const keys = await settle(records.index("byCollection").getAllKeys(name)).catch(() => []);
      for (const key of keys) records.delete(key);
    }
    for (const { collection, record } of change.put ?? []) records.put({ collection, ...record });
    for (const { collection, cursor } of change.cursors ?? []) tx.objectStore("cursors").put(cursor, collection);
    for (const op of change.addOps ?? []) outbox.put(op);
    for (const id of change.removeOps ?? []) outbox.delete(id);
    await settle(tx, "oncomplete");
  }

  async loadCollection(name: string): Promise<SavedCollection> {
    const [records, cursor] = await this.#read<[StoredRecord[], string | null | undefined]>(["records", "cursors"], (store) => [
      store("records").index("byCollection").getAll(name),
      store("cursors").get(name),
    ]);
    return { name, cursor: cursor ?? null, records: records.map(({ key, value, hlc }) => ({ key, value, hlc })) };
  }

  async loadOutbox(): Promise<PendingOp[]> {
    const [outbox] = await this.#read<[PendingOp[]]>(["outbox"], (store) => [store("outbox").getAll()]);
    return outbox;
  }

  async loadClock(): Promise<Clock> {
    const [clock] = await this.#read<[Clock | undefined]>(["meta"], (store) => [store("meta").get("clock")]);
    return clock ?? ZERO;
  }

  async close(): Promise<void> {
    (await this.#db.catch(() => null))?.close();
  }

  /** Deletes the database (after `close`): resolves once it is gone. */
  async destroy(): Promise<void> {
    await this.close();
    await settle(this.#delete());
  }
}
