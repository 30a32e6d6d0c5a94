/**
 * The local replica and outbox, without I/O: the same model as the Rust
 * client. Two layers per record: what the server confirmed (SYNC_DATA,
 * CHANGE, accepted ops) and the ops still queued. The visible value is the
 * last-writer-wins winner of both, exactly as the server decides it, so a
 * refused op rolls back simply by leaving the outbox.
 */
import { isFinalOpCode } from "./codes.js";
import { compareHlc, formatHlc, type Hlc, HlcClock, parseHlc } from "./hlc.js";
import { randomHex32 } from "./random.js";
import type { OpOutcome, Value, WireOp, WireRecord } from "./types.js";

/** A local write not yet settled by the server. */
export type PendingOp = WireOp;

/** A write that left the outbox. */
export interface Settled {
  op: PendingOp;
  ok: boolean;
  code?: string;
  message?: string;
}

export interface SettleReport {
  settled: Settled[];
  retrying: { opId: string; code: string }[];
}

interface Confirmed {
  value: Value;
  hlc: Hlc;
  text: string;
}

interface CollectionState {
  confirmed: Map<string, Confirmed>;
  cursor: string | null;
}

/** A cursor's epoch and position (`<hex epoch>:<position>[:<horizon>]`, or a bare position). */
function parseCursor(cursor: string): { epoch: string; position: number } | null {
  const parts = cursor.split(":");
  const [epoch, position] = parts.length === 1 ? ["", parts[0]!] : [parts[0]!, parts[1]!];
  return parts.length <= 3 && /^\d+$/.test(position) ? { epoch, position: Number(position) } : null;
}

/**
 * Whether `a` replaces `b` under last-writer-wins: the greater stamp wins. On
 * an equal stamp what is held stays: the server refuses a second value under
 * one stamp, so an equal stamp is only ever the same write again, and values
 * are never compared (a decoded `2.0` could not give back its bytes).
 */
function newer(a: { hlc: Hlc }, b: { hlc: Hlc }): boolean {
  return compareHlc(a.hlc, b.hlc) > 0;
}

export class Replica {
  readonly clock: HlcClock;
  /** Random per instance: op ids never repeat across reloads or tabs. */
  readonly #incarnation = randomHex32();
  #nextOp = 1;
  readonly #collections = new Map<string, CollectionState>();
  #ops: PendingOp[] = [];
  /**
   * Ids of ops that left the outbox lately (the newest 10,000): a storage read
   * that raced their removal must not bring them back, or they would be sent twice.
   */
  readonly #gone = new Set<string>();
  /** Pending ops by collection and key: reads stay O(1) however long the outbox is. */
  readonly #byKey = new Map<string, Map<string, PendingOp[]>>();

  constructor(nodeId: string, start?: { millis: number; counter: number }) {
    this.clock = new HlcClock(nodeId, start);
  }

  get outbox(): readonly PendingOp[] {
    return this.#ops;
  }

  #index(op: PendingOp): void {
    let keys = this.#byKey.get(op.collection);
    if (!keys) this.#byKey.set(op.collection, (keys = new Map()));
    const list = keys.get(op.key);
    if (list) list.push(op);
    else keys.set(op.key, [op]);
  }

  #unindex(op: PendingOp): void {
    const keys = this.#byKey.get(op.collection);
    const list = keys?.get(op.key);
    if (!keys || !list) return;
    const rest = list.filter((o) => o.opId !== op.opId);
    if (rest.length > 0) keys.set(op.key, rest);
    else keys.delete(op.key);
  }

  /** Removes ops from the outbox (and the index) by id. */
  #drop(opIds: ReadonlySet<string>): PendingOp[] {
    const dropped: PendingOp[] = [];
    this.#ops = this.#ops.filter((op) => {
      if (!opIds.has(op.opId)) return true;
      dropped.push(op);
      this.#unindex(op);
      return false;
    });
    for (const id of opIds) {
      this.#gone.add(id);
      if (this.#gone.size > 10_000) this.#gone.delete(this.#gone.values().next().value as string);
    }
    return dropped;
  }

  #state(collection: string): CollectionState {
    let state = this.#collections.get(collection);
    if (!state) {
      state = { confirmed: new Map(), cursor: null };
      this.#collections.set(collection, state);
    }
    return state;
  }

  /** Writes locally: visible at once, queued for the server. */
  write(collection: string, key: string, value: Value, nowMs: number): PendingOp {
    const hlc = this.clock.tick(nowMs);
    const op: PendingOp = {
      opId: `${hlc.node}-${this.#incarnation}-${this.#nextOp++}`,
      collection,
      key,
      value,
      hlc: formatHlc(hlc),
    };
    this.#ops.push(op);
    this.#index(op);
    return op;
  }

  /** The visible value of a record (`undefined` if absent or deleted). */
  get(collection: string, key: string): Value | undefined {
    let best: { value: Value; hlc: Hlc } | undefined = this.#collections.get(collection)?.confirmed.get(key);
    for (const op of this.#byKey.get(collection)?.get(key) ?? []) {
      const hlc = parseHlc(op.hlc);
      if (hlc && (!best || newer({ hlc }, best))) best = { value: op.value, hlc };
    }
    return best === undefined || best.value === null ? undefined : best.value;
  }

  /** Every visible record of a collection, sorted by key (tombstones left out). */
  entries(collection: string): [string, Value][] {
    const keys = new Set(this.#collections.get(collection)?.confirmed.keys() ?? []);
    for (const key of this.#byKey.get(collection)?.keys() ?? []) keys.add(key);
    const out: [string, Value][] = [];
    for (const key of [...keys].sort()) {
      const value = this.get(collection, key);
      if (value !== undefined) out.push([key, value]);
    }
    return out;
  }

  /** Drops what the server confirmed of a collection (SYNC_DATA.reset); pending writes stay. */
  reset(collection: string): void {
    const state = this.#state(collection);
    state.confirmed.clear();
    state.cursor = null;
  }

  /** Merges server records seen at `nowMs`; returns the records that changed the confirmed layer. */
  merge(collection: string, records: readonly WireRecord[], nowMs: number): WireRecord[] {
    const state = this.#state(collection);
    const changed: WireRecord[] = [];
    for (const record of records) {
      const hlc = parseHlc(record.hlc);
      if (!hlc) continue;
      this.clock.observe(hlc, nowMs);
      const current = state.confirmed.get(record.key);
      if (!current || newer({ hlc }, current)) {
        state.confirmed.set(record.key, { value: record.value, hlc, text: record.hlc });
        changed.push(record);
      }
    }
    return changed;
  }

  /** Keeps the latest cursor: a later position of the same epoch, or any cursor of a new epoch. */
  setCursor(collection: string, cursor: string): boolean {
    const state = this.#state(collection);
    const [old, next] = [state.cursor === null ? null : parseCursor(state.cursor), parseCursor(cursor)];
    if (old && next && old.epoch === next.epoch && next.position <= old.position) return false;
    state.cursor = cursor;
    return true;
  }

  cursor(collection: string): string | null {
    return this.#collections.get(collection)?.cursor ?? null;
  }

  /**
   * Applies OP_RESULT verdicts: accepted ops join the confirmed layer and leave
   * the outbox, as do ops refused for good (the rollback); ops refused with a
   * retryable code stay queued.
   */
  settle(outcomes: readonly OpOutcome[], nowMs: number): SettleReport {
    const report: SettleReport = { settled: [], retrying: [] };
    const verdicts = new Map<string, OpOutcome>();
    for (const outcome of outcomes) {
      if (typeof outcome.opId !== "string") continue;
      const code = outcome.code ?? "rejected";
      if (!outcome.ok && !isFinalOpCode(code)) report.retrying.push({ opId: outcome.opId, code });
      else verdicts.set(outcome.opId, outcome);
    }
    for (const op of this.#drop(new Set(verdicts.keys()))) {
      const outcome = verdicts.get(op.opId) as OpOutcome;
      if (outcome.ok) {
        this.merge(op.collection, [{ key: op.key, value: op.value, hlc: op.hlc }], nowMs);
        report.settled.push({ op, ok: true });
      } else {
        const settled: Settled = { op, ok: false, code: outcome.code ?? "rejected" };
        if (outcome.message !== undefined) settled.message = outcome.message;
        report.settled.push(settled);
      }
    }
    return report;
  }

  /** Refuses a queued op locally (it can never be sent); it leaves the outbox. */
  refuseLocally(opId: string, code: string, message: string): Settled | null {
    const [op] = this.#drop(new Set([opId]));
    return op ? { op, ok: false, code, message } : null;
  }

  /**
   * Replaces a collection's confirmed layer and cursor (loaded from storage),
   * and moves the clock past every stamp loaded (within the drift bound at
   * `nowMs`): a write made here after seeing a record must win over it.
   */
  loadCollection(collection: string, records: readonly WireRecord[], cursor: string | null, nowMs: number): void {
    const state = this.#state(collection);
    state.confirmed.clear();
    for (const record of records) {
      const hlc = parseHlc(record.hlc);
      if (!hlc) continue;
      state.confirmed.set(record.key, { value: record.value, hlc, text: record.hlc });
      this.clock.observe(hlc, nowMs);
    }
    state.cursor = cursor;
  }

  /**
   * Adds stored ops this replica does not hold yet (written by another tab,
   * or before a reload), keeping stamp order. Never removes one: an op leaves
   * the outbox only when it is settled ([`removeOps`]), so a load that raced a
   * new write cannot lose it.
   */
  addOps(ops: readonly PendingOp[]): void {
    const known = new Set(this.#ops.map((op) => op.opId));
    const added = ops.filter((op) => !known.has(op.opId) && !this.#gone.has(op.opId));
    if (added.length === 0) return;
    this.#ops = [...this.#ops, ...added].sort((a, b) => {
      const [x, y] = [parseHlc(a.hlc), parseHlc(b.hlc)];
      return x && y ? compareHlc(x, y) : 0;
    });
    for (const op of added) {
      this.#index(op);
      const hlc = parseHlc(op.hlc);
      if (hlc) this.clock.observe(hlc, Number.MAX_SAFE_INTEGER);
    }
  }

  /** Drops ops another tab settled. */
  removeOps(opIds: readonly string[]): void {
    this.#drop(new Set(opIds));
  }

  /** The confirmed record of one key (what the server holds, as far as this replica knows). */
  confirmedRecord(collection: string, key: string): WireRecord | undefined {
    const c = this.#collections.get(collection)?.confirmed.get(key);
    return c && { key, value: c.value, hlc: c.text };
  }

  /** The confirmed records of a collection, for saving. */
  confirmed(collection: string): WireRecord[] {
    const state = this.#collections.get(collection);
    if (!state) return [];
    return [...state.confirmed].map(([key, c]) => ({ key, value: c.value, hlc: c.text }));
  }
}
