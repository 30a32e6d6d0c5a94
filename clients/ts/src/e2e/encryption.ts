// The core's `ValueCodec` for end-to-end encryption: what `new SyncgateClient({
// encryption: new Encryption(keyring) })` takes. Attached, it wraps the
// client's record reads and writes: a write is sealed before the client
// stamps and queues it, so the replica, the outbox, storage and the server
// only hold envelopes. The client's reads are synchronous and WebCrypto is
// not, so opened values are kept here, in this page's memory only, by record:
// records are opened as they arrive, and the client hears a `change` for a key
// when its value is open (or an `unreadable` when it cannot be).

import { valueProblem } from "../codec.js";
import { SyncgateError } from "../errors.js";
import type { Value, ValueCodec, ValueCodecHost } from "../types.js";
import { E2eError, equal } from "./bytes.js";
import { E2eCodec, type Keyring } from "./keyring.js";

/** What is known of one record's stored envelope. */
type Opening =
  | { state: "opening"; stored: Value; previous: Value | undefined }
  | { state: "open"; stored: Value; value: Value }
  | { state: "failed"; stored: Value };


/** Whether two stored values are the same envelope (the replica may hold a copy of the bytes this page sealed). */
function same(a: Value, b: Value): boolean {
  return a === b || (a instanceof Uint8Array && b instanceof Uint8Array && equal(a, b));
}

/** Seals what the app writes and opens what the replica holds, with a keyring's keys. */
export class Encryption implements ValueCodec {
  readonly codec: E2eCodec;
  /** By collection, then key. */
  readonly #records = new Map<string, Map<string, Opening>>();
  #client: ValueCodecHost | null = null;

  constructor(readonly keyring: Keyring) {
    this.codec = new E2eCodec(keyring);
    // A key that arrives later (unlocked, imported, granted) may open what failed for want of it.
    keyring.onChange(() => this.retry());
  }

  attach(client: ValueCodecHost): void {
    if (this.#client !== null) throw new E2eError("invalid", "an Encryption serves one client");
    this.#client = client;
    const host = client.collectionHost;
    const { write } = host;
    host.read = (name, key) => {
      const stored = client.replica.get(name, key);
      return stored === undefined ? undefined : this.view(name, key, stored);
    };
    host.readAll = (name) =>
      client.replica.entries(name).flatMap(([key, stored]): [string, Value][] => {
        const value = this.view(name, key, stored);
        return value === undefined ? [] : [[key, value]];
      });
    host.write = async (name, key, value) => {
      if (value === null) return write(name, key, null); // a delete stays a bare tombstone
      // The plaintext is checked here: after sealing, any value is a valid `bin`.
      const problem = valueProblem(value);
      if (problem !== null) throw new SyncgateError("invalid", `the value ${problem}`, { collection: name });
      return write(name, key, await this.seal(name, key, value));
    };
    // Opened as records arrive, not only when the app reads them: a record that does not open is reported at once.
    client.events.on("change", ({ collection, keys }) => {
      if (keys.length === 0) host.readAll(collection);
      else for (const key of keys) host.read(collection, key);
    });
  }

  /** The envelope of `value` at `collection`/`key`; this page reads its own write at once. */
  async seal(collection: string, key: string, value: Value): Promise<Value> {
    const envelope = await this.codec.sealRecord(collection, key, value);
    // This page knows the plaintext already: reads of its own write never wait.
    this.#keys(collection).set(key, { state: "open", stored: envelope, value });
    return envelope;
  }

  /**
   * What the app sees of a stored envelope, at once: `undefined` while it is
   * being opened (a `change` event for the key follows) or when it cannot be
   * (an `unreadable` event said why; the stored record is left as it is).
   */
  view(collection: string, key: string, stored: Value): Value | undefined {
    const keys = this.#keys(collection);
    const known = keys.get(key);
    if (known !== undefined && same(known.stored, stored)) {
      if (known.state === "open") return known.value;
      return known.state === "opening" ? known.previous : undefined;
    }
    // Until the newer envelope opens, the app keeps seeing what it saw.
    const previous = known?.state === "open" ? known.value : known?.state === "opening" ? known.previous : undefined;
    keys.set(key, { state: "opening", stored, previous });
    void this.#open(collection, key, stored);
    return previous;
  }

  /** Forgets every failure, so that the next reads try again (the client is told the keys changed). */
  retry(): void {
    for (const [collection, keys] of this.#records) {
      const failed = [...keys].filter(([, known]) => known.state === "failed").map(([key]) => key);
      for (const key of failed) keys.delete(key);
      if (failed.length > 0) this.#client?.events.emit("change", { collection, keys: failed });
    }
  }

  #keys(collection: string): Map<string, Opening> {
    let keys = this.#records.get(collection);
    if (keys === undefined) this.#records.set(collection, (keys = new Map()));
    return keys;
  }

  async #open(collection: string, key: string, stored: Value): Promise<void> {
    let next: Opening;
    let reason: string | null = null;
    try {
      next = { state: "open", stored, value: await this.codec.openRecord(collection, key, stored) };
    } catch (e) {
      next = { state: "failed", stored };
      reason = e instanceof E2eError ? `${e.code}: ${e.message}` : String(e);
    }
    const keys = this.#keys(collection);
    // A newer envelope arrived meanwhile: its own opening reports it.
    if (keys.get(key)?.stored !== stored) return;
    keys.set(key, next);
    if (reason !== null) this.#client?.events.emit("unreadable", { collection, key, reason });
    this.#client?.events.emit("change", { collection, keys: [key] });
  }
}
