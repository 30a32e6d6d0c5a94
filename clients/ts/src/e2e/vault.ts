// The mode-3 key vault of proto/E2E.md: its items, enrolment, unlocking with
// the password or the recovery code, and the `/vault/{sub}` endpoints over
// fetch. Only wraps ever leave the device.

import { decode, encode } from "@msgpack/msgpack";
import { type Bytes, E2eError, bytes, equal, purpose, random } from "./bytes.js";
import { Keyring } from "./keyring.js";
import { RECOVERY_CODE_BYTES, parseRecoveryCode, renderRecoveryCode } from "./recovery.js";
import { type Argon2id, type KdfParams, openKeyWrap, openPassphraseWrap, publicKeyOf, sealKeyWrap, sealPassphraseWrap } from "./wraps.js";
import type { DataKey } from "./envelope.js";

export const MASTER_BY_PASSWORD = "master/password";
export const MASTER_BY_RECOVERY = "master/recovery";
export const IDENTITY = "identity";
export const KEYS_PREFIX = "keys/";

/** A vault opened on this device. */
export interface Unlocked {
  sub: string;
  /** The vault master key: never leaves the device except wrapped. */
  master: Bytes;
  /** The user's X25519 private and public keys. */
  identity: { secret: Bytes; public: Bytes };
  keyring: Keyring;
}

function item(items: Map<string, Uint8Array>, name: string): Uint8Array {
  const found = items.get(name);
  if (found === undefined) throw new E2eError("invalid", `the vault has no ${JSON.stringify(name)}: not enrolled`);
  return found;
}

function map(encoded: Uint8Array): Record<string, unknown> {
  const value = decode(encoded);
  if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Uint8Array) {
    throw new E2eError("malformed", "a vault item is not a map");
  }
  return value as Record<string, unknown>;
}

async function open(sub: string, master: Uint8Array, items: Map<string, Uint8Array>, keyring: Keyring): Promise<Unlocked> {
  if (master.length !== 32) throw new E2eError("malformed", "a master key has 32 bytes");
  const identity = map(item(items, IDENTITY));
  const wrapped = identity["secret"];
  if (!(identity["public"] instanceof Uint8Array) || typeof wrapped !== "object" || wrapped === null) {
    throw new E2eError("malformed", "the identity item is not {v, public, secret}");
  }
  const secret = await openKeyWrap(master, purpose("identity", sub), encode(wrapped));
  const publicKey = await publicKeyOf(secret);
  if (!equal(publicKey, identity["public"])) throw new E2eError("malformed", "the identity's public key does not match");
  for (const [name, value] of items) {
    if (!name.startsWith(KEYS_PREFIX)) continue;
    const entry = map(value);
    const { space, version, wrap } = entry as { space: unknown; version: unknown; wrap: unknown };
    if (typeof space !== "string" || typeof version !== "number" || `${KEYS_PREFIX}${version}/${space}` !== name) {
      throw new E2eError("malformed", `vault item ${JSON.stringify(name)} holds another key`);
    }
    const key = await openKeyWrap(master, purpose("dk", sub, space, String(version)), encode(wrap));
    keyring.insert(space, { version, secret: key });
  }
  return { sub, master: bytes(master), identity: { secret, public: publicKey }, keyring };
}

/** Opens a vault's items with the password; its keys go into `keyring` (a client's, or a new one). */
export async function unlockWithPassword(
  argon2id: Argon2id,
  sub: string,
  password: string,
  items: Map<string, Uint8Array>,
  keyring = new Keyring(),
): Promise<Unlocked> {
  const master = await openPassphraseWrap(argon2id, password, purpose("vault-master", sub, "password"), item(items, MASTER_BY_PASSWORD));
  return open(sub, master, items, keyring);
}

/** Opens a vault's items with the recovery code (a lost password). */
export async function unlockWithRecoveryCode(
  argon2id: Argon2id,
  sub: string,
  code: string,
  items: Map<string, Uint8Array>,
  keyring = new Keyring(),
): Promise<Unlocked> {
  const secret = await parseRecoveryCode(sub, code);
  const master = await openPassphraseWrap(argon2id, secret, purpose("vault-master", sub, "recovery"), item(items, MASTER_BY_RECOVERY));
  return open(sub, master, items, keyring);
}

/** The vault item that stores `key` of `space`, wrapped under the master key. */
export async function keyItem(unlocked: Unlocked, space: string, key: DataKey): Promise<[string, Uint8Array]> {
  const wrap = decode(await sealKeyWrap(unlocked.master, purpose("dk", unlocked.sub, space, String(key.version)), key.secret));
  return [`${KEYS_PREFIX}${key.version}/${space}`, encode({ space, version: key.version, wrap })];
}

/** The talk to `/vault/{sub}`: `baseUrl` is the server's http(s) origin; `getToken` as the client's. */
export class VaultHttp {
  constructor(
    private readonly baseUrl: string,
    private readonly sub: string,
    private readonly getToken: () => Promise<string>,
    private readonly argon2id: Argon2id,
  ) {}

  private url(name?: string): string {
    const base = `${this.baseUrl.replace(/\/$/, "")}/vault/${encodeURIComponent(this.sub)}`;
    return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
  }

  private async send(method: string, url: string, body?: string): Promise<string> {
    const init: RequestInit = { method, headers: { authorization: `Bearer ${await this.getToken()}`, "content-type": "application/json" } };
    if (body !== undefined) init.body = body;
    const response = await fetch(url, init);
    const text = await response.text();
    if (!response.ok) throw new E2eError("invalid", `vault: ${response.status} ${text}`);
    return text;
  }

  /** Every item of the vault. */
  async items(): Promise<Map<string, Uint8Array>> {
    const listing = JSON.parse(await this.send("GET", this.url())) as { items: Record<string, string> };
    return new Map(Object.entries(listing.items).map(([name, b64]) => [name, bytes([...atob(b64)].map((c) => c.charCodeAt(0)))]));
  }

  /** Stores (replaces) one item. */
  async put(name: string, value: Uint8Array): Promise<void> {
    await this.send("PUT", this.url(name), JSON.stringify({ value: btoa(String.fromCharCode(...value)) }));
  }

  /** First device: creates the vault; returns it unlocked and the recovery code to show once. */
  async enrol(password: string, params: KdfParams): Promise<{ unlocked: Unlocked; recoveryCode: string }> {
    if ((await this.items()).has(MASTER_BY_PASSWORD)) throw new E2eError("invalid", `${this.sub} already has a vault`);
    if (password === "") throw new E2eError("invalid", "an empty password");
    const master = random(32);
    const codeSecret = random(RECOVERY_CODE_BYTES);
    const recoveryCode = await renderRecoveryCode(this.sub, codeSecret);
    const identitySecret = random(32);
    const identityPublic = await publicKeyOf(identitySecret);
    const wrapped = decode(await sealKeyWrap(master, purpose("identity", this.sub), identitySecret));
    await this.put(MASTER_BY_PASSWORD, await sealPassphraseWrap(this.argon2id, password, params, purpose("vault-master", this.sub, "password"), master));
    await this.put(MASTER_BY_RECOVERY, await sealPassphraseWrap(this.argon2id, codeSecret, params, purpose("vault-master", this.sub, "recovery"), master));
    await this.put(IDENTITY, encode({ v: 1, public: identityPublic, secret: wrapped }));
    const unlocked = { sub: this.sub, master, identity: { secret: identitySecret, public: identityPublic }, keyring: new Keyring() };
    return { unlocked, recoveryCode };
  }

  /** Another device: fetches the wraps and opens them with the password. */
  async unlock(password: string, keyring?: Keyring): Promise<Unlocked> {
    return unlockWithPassword(this.argon2id, this.sub, password, await this.items(), keyring);
  }

  /** A device without the password: opens the vault with the recovery code shown at enrolment. */
  async restore(recoveryCode: string, keyring?: Keyring): Promise<Unlocked> {
    return unlockWithRecoveryCode(this.argon2id, this.sub, recoveryCode, await this.items(), keyring);
  }

  /** Wraps the master key under a new password (after a restore); the recovery code stays valid. */
  async changePassword(unlocked: Unlocked, password: string, params: KdfParams): Promise<void> {
    if (password === "") throw new E2eError("invalid", "an empty password");
    const wrap = await sealPassphraseWrap(this.argon2id, password, params, purpose("vault-master", this.sub, "password"), unlocked.master);
    await this.put(MASTER_BY_PASSWORD, wrap);
  }

  /** Stores `key` of `space` in the vault. */
  async storeKey(unlocked: Unlocked, space: string, key: DataKey): Promise<void> {
    const [name, value] = await keyItem(unlocked, space, key);
    await this.put(name, value);
  }
}
