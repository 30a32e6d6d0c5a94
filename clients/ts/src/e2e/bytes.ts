// Byte helpers shared by the end-to-end encryption modules (proto/E2E.md's notation).

/** Bytes backed by a plain ArrayBuffer, as WebCrypto takes them. */
export type Bytes = Uint8Array<ArrayBuffer>;

/** Why an encryption step failed; `code` is the same catalogue as the Rust client's `E2eError`. */
export class E2eError extends Error {
  constructor(
    readonly code: "unknown_key" | "no_key" | "tampered" | "malformed" | "bad_secret" | "not_encrypted" | "invalid",
    message: string,
  ) {
    super(message);
    this.name = "E2eError";
  }
}

const utf8 = new TextEncoder();

/** A copy of `data` on its own ArrayBuffer. */
export function bytes(data: Uint8Array | number[]): Bytes {
  return new Uint8Array(data);
}

/** `str16(s)`: UTF-8 bytes preceded by their length as 2 bytes big-endian. */
export function str16(s: string): Bytes {
  const encoded = utf8.encode(s);
  if (encoded.length > 0xffff) throw new E2eError("invalid", `name of ${encoded.length} bytes is too long`);
  const out = new Uint8Array(2 + encoded.length);
  new DataView(out.buffer).setUint16(0, encoded.length);
  out.set(encoded, 2);
  return out;
}

/** 4 bytes big-endian. */
export function u32(n: number): Bytes {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

/** The concatenation of `parts`. */
export function concat(...parts: Uint8Array[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** ASCII text as bytes. */
export function ascii(s: string): Bytes {
  return bytes(utf8.encode(s));
}

/** `n` bytes from the platform's CSPRNG. */
export function random(n: number): Bytes {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** Whether two byte strings are equal (for checksums, which are not secret). */
export function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** A purpose: length-prefixed parts (a slot name, a space, a version). */
export function purpose(...parts: string[]): Bytes {
  return concat(...parts.map(str16));
}

/**
 * Imported AES keys by their bytes' array: importing costs more than sealing a
 * small record, and a space key seals many (its bytes never change once made).
 * Weak, so a dropped key is let go.
 */
const imported = new WeakMap<Uint8Array, Promise<CryptoKey>>();

function aesKey(key: Uint8Array): Promise<CryptoKey> {
  let found = imported.get(key);
  if (found === undefined) {
    found = crypto.subtle.importKey("raw", bytes(key), "AES-GCM", false, ["encrypt", "decrypt"]);
    imported.set(key, found);
  }
  return found;
}

/** AES-256-GCM with a 16-byte tag, through WebCrypto. */
export async function aesGcm(
  direction: "encrypt" | "decrypt",
  key: Uint8Array,
  nonce: Uint8Array,
  data: Uint8Array,
  aad: Uint8Array,
): Promise<Bytes> {
  if (key.length !== 32) throw new E2eError("invalid", "an AES-256 key has 32 bytes");
  if (nonce.length !== 12) throw new E2eError("malformed", `a nonce has 12 bytes, not ${nonce.length}`);
  const cryptoKey = await aesKey(key);
  const params = { name: "AES-GCM", iv: bytes(nonce), additionalData: bytes(aad), tagLength: 128 };
  try {
    return new Uint8Array(await crypto.subtle[direction](params, cryptoKey, bytes(data)));
  } catch {
    throw new E2eError("tampered", "the ciphertext does not authenticate (wrong key, tampered, or moved)");
  }
}
