/**
 * Hybrid logical clocks, `"<millis>:<counter>:<nodeId>"`, with the same rules
 * as the server and the Rust client: total order by (millis, counter, node
 * bytes), 16-bit counters, and a clock that follows a remote stamp only when
 * it is at most the drift bound ahead of its own wall clock.
 */

export const MAX_COUNTER = 0xffff;
/**
 * The largest millis a stamp may carry: 2^53-1, the largest integer a
 * JavaScript number holds exactly (and a u64 too), so every parser reads the
 * same stamp the same way (proto/vectors.json, `hlc`).
 */
export const MAX_MILLIS = Number.MAX_SAFE_INTEGER;
export const DEFAULT_MAX_AHEAD_MS = 60_000;

export interface Hlc {
  millis: number;
  counter: number;
  node: string;
}

const utf8 = new TextEncoder();

/** Parses a stamp; `null` when it is not one. */
export function parseHlc(text: string): Hlc | null {
  const first = text.indexOf(":");
  const second = first < 0 ? -1 : text.indexOf(":", first + 1);
  if (second < 0) return null;
  const millis = text.slice(0, first);
  const counter = text.slice(first + 1, second);
  const node = text.slice(second + 1);
  if (!/^\d{1,16}$/.test(millis) || !/^\d{1,5}$/.test(counter)) return null;
  const m = Number(millis);
  const c = Number(counter);
  const nodeBytes = utf8.encode(node).length;
  // eslint-disable-next-line no-control-regex
  if (m > MAX_MILLIS || c > MAX_COUNTER || nodeBytes === 0 || nodeBytes > 64 || /[\u0000-\u001f\u007f-\u009f]/.test(node)) return null;
  return { millis: m, counter: c, node };
}

export function formatHlc(h: Hlc): string {
  return `${h.millis}:${h.counter}:${h.node}`;
}

/** Byte-wise comparison, as Rust compares slices. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

export function compareHlc(a: Hlc, b: Hlc): number {
  if (a.millis !== b.millis) return a.millis < b.millis ? -1 : 1;
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1;
  return compareBytes(utf8.encode(a.node), utf8.encode(b.node));
}

/** A node's clock: monotonic, after what it saw, never dragged far ahead. */
export class HlcClock {
  #last: { millis: number; counter: number };

  readonly #maxAheadMs: number;

  constructor(
    readonly node: string,
    start: { millis: number; counter: number } = { millis: 0, counter: 0 },
    maxAheadMs: number = DEFAULT_MAX_AHEAD_MS,
  ) {
    this.#maxAheadMs = maxAheadMs;
    this.#last = { millis: start.millis, counter: Math.min(start.counter, MAX_COUNTER) };
  }

  /** A fresh stamp at wall time `nowMs`, after everything seen; a full counter moves on a millisecond. */
  tick(nowMs: number): Hlc {
    if (nowMs > this.#last.millis) this.#last = { millis: nowMs, counter: 0 };
    else if (this.#last.counter >= MAX_COUNTER) this.#last = { millis: this.#last.millis + 1, counter: 0 };
    else this.#last = { millis: this.#last.millis, counter: this.#last.counter + 1 };
    return { millis: this.#last.millis, counter: this.#last.counter, node: this.node };
  }

  /** Absorbs a stamp seen at `nowMs`; false (nothing absorbed) when it is too far ahead. */
  observe(seen: Hlc, nowMs: number): boolean {
    if (seen.millis > nowMs + this.#maxAheadMs) return false;
    if (seen.millis > this.#last.millis || (seen.millis === this.#last.millis && seen.counter > this.#last.counter)) {
      this.#last = { millis: seen.millis, counter: Math.min(seen.counter, MAX_COUNTER) };
    }
    return true;
  }

  state(): { millis: number; counter: number } {
    return { ...this.#last };
  }
}
