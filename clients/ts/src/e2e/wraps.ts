// Key wraps, passphrase wraps and grants of proto/E2E.md, through WebCrypto
// (AES-GCM, X25519, HKDF). Argon2id is not in WebCrypto: a passphrase wrap
// takes the app's Argon2id function (a maintained WASM build such as
// hash-wasm's `argon2id`, with the same parameters as the Rust `argon2` crate).

import { decode, encode } from "@msgpack/msgpack";
import { type Bytes, E2eError, aesGcm, ascii, bytes, concat, random, str16, u32 } from "./bytes.js";
import type { DataKey } from "./envelope.js";

/** Argon2id cost parameters (version 0x13), stored with each passphrase wrap. */
export interface KdfParams {
  /** Memory in KiB. */
  m: number;
  t: number;
  p: number;
}

/** RFC 9106's second recommended option, as in the Rust client. */
export const DEFAULT_KDF: KdfParams = { m: 65536, t: 3, p: 1 };

/** Argon2id, version 0x13, 32 bytes of output: supplied by the app (a WASM build from npm). */
export type Argon2id = (secret: Uint8Array, salt: Uint8Array, params: KdfParams) => Promise<Uint8Array>;

function field(map: Record<string, unknown>, name: string): Bytes {
  const value = map[name];
  if (!(value instanceof Uint8Array)) throw new E2eError("malformed", `a wrap's ${name} is not bytes`);
  return bytes(value);
}

function number(map: Record<string, unknown>, name: string): number {
  const value = map[name];
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    throw new E2eError("malformed", `a wrap's ${name} is not a count`);
  }
  return value;
}

function asMap(encoded: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = decode(encoded);
  } catch (e) {
    throw new E2eError("malformed", `not a wrap: ${String(e)}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Uint8Array) {
    throw new E2eError("malformed", "not a wrap: not a map");
  }
  const map = value as Record<string, unknown>;
  if (map["v"] !== 1) throw new E2eError("malformed", `unknown wrap format ${String(map["v"])}`);
  return map;
}

/** Wraps `material` under a 32-byte key for `purpose` (MessagePack `{v, nonce, ct}`). */
export async function sealKeyWrap(key: Uint8Array, purpose: Uint8Array, material: Uint8Array): Promise<Uint8Array> {
  const nonce = random(12);
  const ct = await aesGcm("encrypt", key, nonce, material, concat(ascii("syncgate-keywrap"), Uint8Array.of(1), purpose));
  return encode({ v: 1, nonce, ct });
}

/** The material of a key wrap. */
export async function openKeyWrap(key: Uint8Array, purpose: Uint8Array, wrap: Uint8Array): Promise<Bytes> {
  const map = asMap(wrap);
  return aesGcm("decrypt", key, field(map, "nonce"), field(map, "ct"), concat(ascii("syncgate-keywrap"), Uint8Array.of(1), purpose));
}

function passphraseAad(purpose: Uint8Array, params: KdfParams, salt: Uint8Array): Bytes {
  return concat(ascii("syncgate-wrap"), Uint8Array.of(1), purpose, str16("argon2id"), u32(params.m), u32(params.t), u32(params.p), salt);
}

/** Largest parameters a wrap may ask for, as in the Rust client (1 GiB, 16 passes, 16 lanes). */
function checkBounds(params: KdfParams): void {
  if (params.m > 1024 * 1024 || params.t > 16 || params.p > 16) {
    throw new E2eError("invalid", `Argon2id parameters ${JSON.stringify(params)} exceed the bounds`);
  }
}

/** Wraps `material` under a passphrase or a recovery code's secret bytes (MessagePack `{v, kdf, m, t, p, salt, nonce, ct}`). */
export async function sealPassphraseWrap(
  argon2id: Argon2id,
  passphrase: string | Uint8Array,
  params: KdfParams,
  purpose: Uint8Array,
  material: Uint8Array,
): Promise<Uint8Array> {
  checkBounds(params);
  const salt = random(16);
  const nonce = random(12);
  const secret = typeof passphrase === "string" ? new TextEncoder().encode(passphrase) : passphrase;
  const kek = await argon2id(secret, salt, params);
  const ct = await aesGcm("encrypt", kek, nonce, material, passphraseAad(purpose, params, salt));
  return encode({ v: 1, kdf: "argon2id", m: params.m, t: params.t, p: params.p, salt, nonce, ct });
}

/** The material of a passphrase wrap ("tampered" for a wrong passphrase too). */
export async function openPassphraseWrap(
  argon2id: Argon2id,
  passphrase: string | Uint8Array,
  purpose: Uint8Array,
  wrap: Uint8Array,
): Promise<Bytes> {
  const map = asMap(wrap);
  if (map["kdf"] !== "argon2id") throw new E2eError("malformed", `unknown kdf ${String(map["kdf"])}`);
  const params = { m: number(map, "m"), t: number(map, "t"), p: number(map, "p") };
  checkBounds(params);
  const salt = field(map, "salt");
  const secret = typeof passphrase === "string" ? new TextEncoder().encode(passphrase) : passphrase;
  const kek = await argon2id(secret, salt, params);
  return aesGcm("decrypt", kek, field(map, "nonce"), field(map, "ct"), passphraseAad(purpose, params, salt));
}

// PKCS#8 header of an X25519 private key (RFC 8410): WebCrypto imports raw private keys only this way.
const X25519_PKCS8 = Uint8Array.of(0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20);

async function x25519(secret: Uint8Array, peerPublic: Uint8Array): Promise<Bytes> {
  const privateKey = await crypto.subtle.importKey("pkcs8", concat(X25519_PKCS8, secret), { name: "X25519" }, false, ["deriveBits"]);
  const publicKey = await crypto.subtle.importKey("raw", bytes(peerPublic), { name: "X25519" }, false, []);
  const shared = new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: publicKey }, privateKey, 256));
  if (shared.every((b) => b === 0)) throw new E2eError("tampered", "a low-order public key");
  return shared;
}

async function grantKey(shared: Uint8Array, eph: Uint8Array, recipient: Uint8Array): Promise<Bytes> {
  const ikm = await crypto.subtle.importKey("raw", bytes(shared), "HKDF", false, ["deriveBits"]);
  const params = { name: "HKDF", hash: "SHA-256", salt: concat(eph, recipient), info: ascii("syncgate-share/1") };
  return new Uint8Array(await crypto.subtle.deriveBits(params, ikm, 256));
}

function grantAad(space: string, version: number, recipientSub: string): Bytes {
  return concat(ascii("syncgate-share"), Uint8Array.of(1), str16(space), u32(version), str16(recipientSub));
}

/** The public key of an X25519 private key. */
export async function publicKeyOf(secret: Uint8Array): Promise<Bytes> {
  const privateKey = await crypto.subtle.importKey("pkcs8", concat(X25519_PKCS8, secret), { name: "X25519" }, true, ["deriveBits"]);
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  if (jwk.x === undefined) throw new E2eError("invalid", "no public key in the exported JWK");
  return bytes([...atob(jwk.x.replace(/-/g, "+").replace(/_/g, "/"))].map((c) => c.charCodeAt(0)));
}

/** Seals `key` of `space` to a recipient (their public key and sub): MessagePack `{v, version, eph, nonce, ct}`. */
export async function sealGrant(space: string, key: DataKey, recipientPublic: Uint8Array, recipientSub: string): Promise<Uint8Array> {
  const ephemeral = random(32);
  const eph = await publicKeyOf(ephemeral);
  const shared = await x25519(ephemeral, recipientPublic);
  const nonce = random(12);
  const ct = await aesGcm("encrypt", await grantKey(shared, eph, recipientPublic), nonce, key.secret, grantAad(space, key.version, recipientSub));
  return encode({ v: 1, version: key.version, eph, nonce, ct });
}

/** The data key a grant for `space` carries, opened by its recipient. */
export async function openGrant(space: string, grant: Uint8Array, mySecret: Uint8Array, mySub: string): Promise<DataKey> {
  const map = asMap(grant);
  const version = number(map, "version");
  const eph = field(map, "eph");
  if (eph.length !== 32) throw new E2eError("malformed", "a grant's public key has 32 bytes");
  const myPublic = await publicKeyOf(mySecret);
  const shared = await x25519(mySecret, eph);
  const secret = await aesGcm("decrypt", await grantKey(shared, eph, myPublic), field(map, "nonce"), field(map, "ct"), grantAad(space, version, mySub));
  if (secret.length !== 32) throw new E2eError("malformed", "a granted key has 32 bytes");
  return { version, secret };
}
