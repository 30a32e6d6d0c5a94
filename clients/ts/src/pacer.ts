/**
 * Paces one connection's messages within the rate its server announced
 * (`AUTH_ACK.limits.messagesPerSecond` and `messageBurst`). The server counts
 * every message in a token bucket and closes with 4029 far past it; a client
 * that re-sends its SUBs, SYNCs and replay at once after a reconnect would be
 * closed again on every attempt, so every frame leaves through here.
 *
 * The client's bucket is a little smaller and slower than the server's (one
 * token held back, 90% of the rate): frames paced here can arrive bunched by
 * the network and must still fit.
 */
export class Pacer {
  /** Frames per second; 0 sends at once. */
  #rate = 0;
  #capacity = 0;
  #tokens = 0;
  #refilledAt = 0;
  /** Frames counted before the limits were known (the AUTH). */
  #sentUnpaced = 0;
  readonly #queue: Uint8Array[] = [];
  #timer: ReturnType<typeof setTimeout> | null = null;

  readonly #deliver: (frame: Uint8Array) => void;
  readonly #now: () => number;

  constructor(
    deliver: (frame: Uint8Array) => void,
    now: () => number = Date.now,
  ) {
    this.#deliver = deliver;
    this.#now = now;
  }

  /** Applies announced limits; frames already sent on this socket are counted. */
  setLimits(messagesPerSecond: number | undefined, messageBurst: number | undefined): void {
    const rate = messagesPerSecond ?? 0;
    const burst = messageBurst ?? 0;
    if (rate <= 0 || burst <= 0) {
      this.#rate = 0;
      this.#flush();
      return;
    }
    const first = this.#rate === 0;
    this.#rate = rate * 0.9;
    this.#capacity = Math.max(1, burst - 1);
    if (first) {
      this.#tokens = Math.max(0, this.#capacity - this.#sentUnpaced);
      this.#refilledAt = this.#now();
    }
    this.#tokens = Math.min(this.#tokens, this.#capacity);
    this.#flush();
  }

  /** Sends `frame` now if the bucket allows, else after the frames queued before it. */
  send(frame: Uint8Array): void {
    if (this.#rate === 0) {
      this.#sentUnpaced++;
      this.#deliver(frame);
      return;
    }
    this.#queue.push(frame);
    this.#flush();
  }

  /** Frames waiting for their turn. */
  get waiting(): number {
    return this.#queue.length;
  }

  /** Drops what waits (the socket is gone) and stops the timer. */
  clear(): void {
    this.#queue.length = 0;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #flush(): void {
    if (this.#timer !== null) return;
    while (this.#queue.length > 0) {
      if (this.#rate !== 0 && !this.#take()) {
        const wait = Math.ceil(((1 - this.#tokens) / this.#rate) * 1000);
        this.#timer = setTimeout(() => {
          this.#timer = null;
          this.#flush();
        }, wait);
        return;
      }
      this.#deliver(this.#queue.shift()!);
    }
  }

  #take(): boolean {
    const now = this.#now();
    this.#tokens = Math.min(this.#capacity, this.#tokens + ((now - this.#refilledAt) / 1000) * this.#rate);
    this.#refilledAt = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
