// The envelope of proto/E2E.md: one value sealed with a space's data key,
// AES-256-GCM bound to space, key version, collection (or topic) and key.
//
//   envelope = 0x01 | u32 keyVersion | nonce (12) | ciphertext | tag (16)
//   aad      = "syncgate-e2e" | 0x01 | kind | str16(space) | u32 keyVersion | str16(place) | str16(key)

import { decodeValue, encodeValue } from "../codec.js";
import type { Value } from "../types.js";
import { type Bytes, E2eError, aesGcm, ascii, concat, random, str16, u32 } from "./bytes.js";

export const FORMAT_VERSION = 1;
export const HEADER_LEN = 1 + 4 + 12;
export const TAG_LEN = 16;

/** One data key: its version in its space and its 32 bytes. */
export interface DataKey {
  version: number;
  secret: Uint8Array;
}

/** Where a sealed value lives; all of it is authenticated. */
export interface Binding {
  kind: "record" | "message";
  space: string;
  /** The collection (records) or topic (messages). */
  place: string;
  /** The record key ("" for messages). */
  key: string;
}

/** The associated data of an envelope sealed under `version` at `binding`. */
export function associatedData(binding: Binding, version: number): Bytes {
  const kind = binding.kind === "record" ? 1 : 2;
  return concat(
    ascii("syncgate-e2e"),
    Uint8Array.of(FORMAT_VERSION, kind),
    str16(binding.space),
    u32(version),
    str16(binding.place),
    str16(binding.key),
  );
}

/** Seals `value` under `key` (a fresh random nonce unless a test vector gives one). */
export async function seal(key: DataKey, binding: Binding, value: Value, nonce: Uint8Array = random(12)): Promise<Bytes> {
  const sealed = await aesGcm("encrypt", key.secret, nonce, encodeValue(value), associatedData(binding, key.version));
  return concat(Uint8Array.of(FORMAT_VERSION), u32(key.version), nonce, sealed);
}

/** The key version an envelope names, after checking its format and length. */
export function keyVersion(envelope: Uint8Array): number {
  if (envelope.length < HEADER_LEN + TAG_LEN) {
    throw new E2eError("malformed", `an envelope has at least ${HEADER_LEN + TAG_LEN} bytes, this one ${envelope.length}`);
  }
  if (envelope[0] !== FORMAT_VERSION) throw new E2eError("malformed", `unknown envelope format ${envelope[0]}`);
  return new DataView(envelope.buffer, envelope.byteOffset + 1, 4).getUint32(0);
}

/** Opens an envelope sealed at `binding` with `key`: the value, or an E2eError. */
export async function open(key: DataKey, binding: Binding, envelope: Uint8Array): Promise<Value> {
  const version = keyVersion(envelope);
  if (version !== key.version) {
    throw new E2eError("unknown_key", `no key version ${version} of space ${JSON.stringify(binding.space)}`);
  }
  const plaintext = await aesGcm(
    "decrypt",
    key.secret,
    envelope.subarray(5, HEADER_LEN),
    envelope.subarray(HEADER_LEN),
    associatedData(binding, version),
  );
  try {
    return decodeValue(plaintext);
  } catch (e) {
    throw new E2eError("malformed", `the sealed value does not decode: ${String(e)}`);
  }
}
