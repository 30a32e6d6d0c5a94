/**
 * Where a client keeps its replica: the confirmed records and cursor of each
 * collection, the outbox, and the clock. Every change is one atomic
 * `apply`, awaited before a write resolves, so a write is durable (in
 * IndexedDB) before `set` returns.
 */
import type { PendingOp } from "./replica.js";
import type { WireRecord } from "./types.js";

export interface SavedCollection {
  name: string;
  cursor: string | null;
  records: WireRecord[];
}

export interface SavedState {
  /** The device's id, shared by the tabs of one storage (each tab adds its own suffix). */
  deviceId: string | null;
  /** The identity (`sub`) whose replica and outbox these are, once known. */
  owner?: string | null;
  clock: { millis: number; counter: number };
  collections: SavedCollection[];
  outbox: PendingOp[];
}

/** One atomic change of the stored replica. */
export interface StorageChange {
  deviceId?: string;
  owner?: string;
  clock?: { millis: number; counter: number };
  /** Collections whose confirmed records are dropped first (a reset). */
  clear?: string[];
  put?: { collection: string; record: WireRecord }[];
  cursors?: { collection: string; cursor: string | null }[];
  addOps?: PendingOp[];
  removeOps?: string[];
}

export interface Storage {
  load(): Promise<SavedState>;
  apply(change: StorageChange): Promise<void>;
  loadCollection(name: string): Promise<SavedCollection>;
  loadOutbox(): Promise<PendingOp[]>;
  /** The clock saved by any tab (followers stamp after it); optional for custom storages. */
  loadClock?(): Promise<{ millis: number; counter: number }>;
  /** Closes; resolves once closed. */
  close(): Promise<void> | void;
  /** Deletes everything stored under this name (sign-out); optional for custom storages. */
  destroy?(): Promise<void>;
}

interface MemoryData {
  deviceId: string | null;
  owner: string | null;
  clock: { millis: number; counter: number };
  records: Map<string, Map<string, WireRecord>>;
  cursors: Map<string, string | null>;
  outbox: Map<string, PendingOp>;
}

const shared = new Map<string, MemoryData>();

const fresh = (): MemoryData => ({
  deviceId: null,
  owner: null,
  clock: { millis: 0, counter: 0 },
  records: new Map(),
  cursors: new Map(),
  outbox: new Map(),
});

/**
 * In-memory storage for tests and Node. Instances created with the same
 * `name` share their data, like tabs sharing one IndexedDB database.
 */
export class MemoryStorage implements Storage {
  readonly #data: MemoryData;

  readonly #name: string | undefined;

  constructor(name?: string) {
    this.#name = name;
    this.#data = (name !== undefined && shared.get(name)) || fresh();
    if (name !== undefined) shared.set(name, this.#data);
  }

  async load(): Promise<SavedState> {
    const names = new Set([...this.#data.records.keys(), ...this.#data.cursors.keys()]);
    const collections = await Promise.all([...names].map((name) => this.loadCollection(name)));
    return { deviceId: this.#data.deviceId, owner: this.#data.owner, clock: { ...this.#data.clock }, collections, outbox: await this.loadOutbox() };
  }

  async apply(change: StorageChange): Promise<void> {
    const d = this.#data;
    if (change.deviceId !== undefined) d.deviceId = change.deviceId;
    if (change.owner !== undefined) d.owner = change.owner;
    if (change.clock) d.clock = maxClock(d.clock, change.clock);
    for (const name of change.clear ?? []) d.records.delete(name);
    for (const { collection, record } of change.put ?? []) {
      let records = d.records.get(collection);
      if (!records) d.records.set(collection, (records = new Map()));
      records.set(record.key, record);
    }
    for (const { collection, cursor } of change.cursors ?? []) d.cursors.set(collection, cursor);
    for (const op of change.addOps ?? []) d.outbox.set(op.opId, op);
    for (const id of change.removeOps ?? []) d.outbox.delete(id);
  }

  async loadCollection(name: string): Promise<SavedCollection> {
    return {
      name,
      cursor: this.#data.cursors.get(name) ?? null,
      records: [...(this.#data.records.get(name)?.values() ?? [])],
    };
  }

  async loadOutbox(): Promise<PendingOp[]> {
    return [...this.#data.outbox.values()];
  }

  async loadClock(): Promise<{ millis: number; counter: number }> {
    return { ...this.#data.clock };
  }

  close(): void {}

  async destroy(): Promise<void> {
    if (this.#name !== undefined) shared.delete(this.#name);
    // Every instance sharing this data (another "tab") sees it emptied too.
    Object.assign(this.#data, fresh());
  }
}

export function maxClock(
  a: { millis: number; counter: number },
  b: { millis: number; counter: number },
): { millis: number; counter: number } {
  return a.millis > b.millis || (a.millis === b.millis && a.counter >= b.counter) ? a : b;
}
