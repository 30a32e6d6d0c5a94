// Space keys with versions, and the codec a client applies to every value it
// writes and reads: the hook `SyncgateClient`'s constructor takes beside
// `getToken` and `storage` (`encryption: new E2eCodec(keyring)`), so that
// `collection(name).set` seals before the value is stamped and queued, and
// `get`/`entries` open what the replica holds. Same rules as the Rust client
// (crates/syncgate-client/src/e2e/keys.rs and encrypted.rs).

import type { Value } from "../types.js";
import { E2eError, equal, random } from "./bytes.js";
import { type Binding, type DataKey, keyVersion, open, seal } from "./envelope.js";

/** Whether `name` (a collection or topic) lies in `space`: the name itself or below it, by whole segments. */
export function inSpace(space: string, name: string): boolean {
  return name === space || name.startsWith(`${space}/`);
}

function checkSpace(space: string): void {
  const bytes = new TextEncoder().encode(space).length;
  if (bytes === 0 || bytes > 256) throw new E2eError("invalid", "a space name has 1 to 256 bytes");
  if (space.split("/").some((s) => s === "" || s === "*" || s === "**")) {
    throw new E2eError("invalid", `space ${JSON.stringify(space)} has an empty or wildcard segment`);
  }
}

/** Every space's keys this device holds, by version. */
export class Keyring {
  private readonly spaces = new Map<string, Map<number, DataKey>>();
  /** Told when a key is added: records that did not open for want of it may open now. */
  private readonly listeners = new Set<() => void>();

  /** Calls `listener` whenever a key is added; returns the function that stops it. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Creates `space` with a fresh version-1 key. */
  createSpace(space: string): DataKey {
    checkSpace(space);
    if (this.spaces.has(space)) throw new E2eError("invalid", `space ${JSON.stringify(space)} already has keys`);
    const key = { version: 1, secret: random(32) };
    this.insert(space, key);
    return key;
  }

  /** Adds a key (imported, unwrapped, granted); another key under a held version is refused. */
  insert(space: string, key: DataKey): void {
    checkSpace(space);
    if (!Number.isInteger(key.version) || key.version < 1 || key.secret.length !== 32) {
      throw new E2eError("invalid", "a data key has a version from 1 and 32 bytes");
    }
    const versions = this.spaces.get(space) ?? new Map<number, DataKey>();
    const held = versions.get(key.version);
    if (held !== undefined && !equal(held.secret, key.secret)) {
      throw new E2eError("invalid", `space ${JSON.stringify(space)} already holds another key as version ${key.version}`);
    }
    versions.set(key.version, held ?? key);
    this.spaces.set(space, versions);
    if (held === undefined) for (const listener of this.listeners) listener();
  }

  /** A fresh key as the next version of `space` (a rotation, when a member is removed). */
  rotate(space: string): DataKey {
    const current = this.current(space);
    if (current === undefined) throw new E2eError("no_key", `no key covers ${JSON.stringify(space)}`);
    const key = { version: current.version + 1, secret: random(32) };
    this.insert(space, key);
    return key;
  }

  /** The newest key of `space`: what new values are sealed with. */
  current(space: string): DataKey | undefined {
    const versions = this.spaces.get(space);
    if (versions === undefined) return undefined;
    return versions.get(Math.max(...versions.keys()));
  }

  /** A given version of `space`'s key. */
  version(space: string, version: number): DataKey | undefined {
    return this.spaces.get(space)?.get(version);
  }

  /** The space covering `name`: the longest held one. */
  spaceOf(name: string): string | undefined {
    let found: string | undefined;
    for (const space of this.spaces.keys()) {
      if (inSpace(space, name) && (found === undefined || space.length > found.length)) found = space;
    }
    return found;
  }
}

/** Seals and opens values by where they live, with a keyring's keys. */
export class E2eCodec {
  constructor(readonly keyring: Keyring) {}

  private binding(kind: Binding["kind"], place: string, key: string): Binding {
    const space = this.keyring.spaceOf(place);
    if (space === undefined) throw new E2eError("no_key", `no key covers ${JSON.stringify(place)}`);
    return { kind, space, place, key };
  }

  private async sealAt(binding: Binding, value: Value): Promise<Uint8Array> {
    const key = this.keyring.current(binding.space);
    if (key === undefined) throw new E2eError("no_key", `no key covers ${JSON.stringify(binding.place)}`);
    return seal(key, binding, value);
  }

  private async openAt(binding: Binding, stored: Value): Promise<Value> {
    if (!(stored instanceof Uint8Array)) throw new E2eError("not_encrypted", "the stored value is not an envelope");
    const version = keyVersion(stored);
    const key = this.keyring.version(binding.space, version);
    if (key === undefined) {
      throw new E2eError("unknown_key", `no key version ${version} of space ${JSON.stringify(binding.space)} on this device`);
    }
    return open(key, binding, stored);
  }

  /** The envelope to write as `collection`/`key` (before it is stamped and queued). Deletes stay null. */
  async sealRecord(collection: string, key: string, value: Value): Promise<Uint8Array> {
    return this.sealAt(this.binding("record", collection, key), value);
  }

  /** The value a stored record holds; an E2eError (report it with collection and key) when it does not open. */
  async openRecord(collection: string, key: string, stored: Value): Promise<Value> {
    return this.openAt(this.binding("record", collection, key), stored);
  }

  /** The envelope to publish as `data` on `topic`. */
  async sealMessage(topic: string, data: Value): Promise<Uint8Array> {
    return this.sealAt(this.binding("message", topic, ""), data);
  }

  /** The data of a delivered message. */
  async openMessage(topic: string, stored: Value): Promise<Value> {
    return this.openAt(this.binding("message", topic, ""), stored);
  }
}
