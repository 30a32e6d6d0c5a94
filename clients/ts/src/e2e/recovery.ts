// Typable secrets of proto/E2E.md: the recovery secret of one data key
// (modes 1 and 2), the vault recovery code (mode 3), and the QR payload.
// Crockford base32 in dash-joined groups of four, ending in a 4-byte
// SHA-256 checksum over a label, the space (or sub) and the payload.

import { type Bytes, E2eError, bytes, concat, equal, str16, u32 } from "./bytes.js";
import type { DataKey } from "./envelope.js";

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/** Readers forgive case and the look-alikes o/O → 0, i/I/l/L → 1. */
const ALIASES: Record<string, string> = { O: "0", I: "1", L: "1" };
export const QR_PREFIX = "syncgate-key:1:";
export const RECOVERY_CODE_BYTES = 21;
const SECRET_LABEL = "syncgate-recovery-secret/1";
const CODE_LABEL = "syncgate-recovery-code/1";

function base32(data: Uint8Array): string {
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of data) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31];
  return out;
}

function unbase32(text: string): Bytes {
  const out: number[] = [];
  let buffer = 0;
  let bits = 0;
  for (const raw of text.toUpperCase()) {
    const c = ALIASES[raw] ?? raw;
    const digit = ALPHABET.indexOf(c);
    if (digit < 0) throw new E2eError("bad_secret", `${JSON.stringify(raw)} is not a recovery string character`);
    buffer = (buffer << 5) | digit;
    bits += 5;
    if (bits >= 8) {
      out.push((buffer >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
    buffer &= (1 << bits) - 1;
  }
  if (buffer !== 0) throw new E2eError("bad_secret", "trailing bits are not zero");
  return bytes(out);
}

async function checksum(label: string, space: string, payload: Uint8Array): Promise<Bytes> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", concat(str16(label), str16(space), payload)));
  return digest.slice(0, 4);
}

async function render(label: string, space: string, payload: Uint8Array): Promise<string> {
  const text = base32(concat(payload, await checksum(label, space, payload)));
  return (text.match(/.{1,4}/g) ?? []).join("-");
}

async function parse(label: string, space: string, typed: string, payloadLen: number): Promise<Bytes> {
  const compact = typed.replace(/[\s-]/g, "");
  const expected = Math.ceil(((payloadLen + 4) * 8) / 5);
  if (compact.length !== expected) {
    throw new E2eError("bad_secret", `expected ${expected} characters, got ${compact.length}`);
  }
  const all = unbase32(compact);
  const payload = all.slice(0, payloadLen);
  if (!equal(all.slice(payloadLen), await checksum(label, space, payload))) {
    throw new E2eError("bad_secret", "the checksum does not match: a typo, or a secret of another space");
  }
  return payload;
}

/** The recovery secret of one data key of `space`. */
export async function exportSecret(space: string, key: DataKey): Promise<string> {
  return render(SECRET_LABEL, space, concat(u32(key.version), key.secret));
}

/** The data key a typed recovery secret of `space` holds. */
export async function importSecret(space: string, typed: string): Promise<DataKey> {
  const payload = await parse(SECRET_LABEL, space, typed, 36);
  const version = new DataView(payload.buffer).getUint32(0);
  if (version === 0) throw new E2eError("bad_secret", "key versions start at 1");
  return { version, secret: payload.slice(4) };
}

function base64url(data: Uint8Array): string {
  return btoa(String.fromCharCode(...data)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unbase64url(text: string): Bytes {
  const plain = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return bytes([...plain].map((c) => c.charCodeAt(0)));
}

/** The string to render as a QR code (SVG, data URL): the space and its recovery secret. */
export async function qrPayload(space: string, key: DataKey): Promise<string> {
  return `${QR_PREFIX}${base64url(new TextEncoder().encode(space))}:${await exportSecret(space, key)}`;
}

/** The space and key a scanned QR payload carries. */
export async function fromQrPayload(scanned: string): Promise<{ space: string; key: DataKey }> {
  if (!scanned.startsWith(QR_PREFIX)) throw new E2eError("bad_secret", `a key QR code starts with ${QR_PREFIX}`);
  const [encoded, secret, ...rest] = scanned.slice(QR_PREFIX.length).split(":");
  if (encoded === undefined || secret === undefined || rest.length > 0) {
    throw new E2eError("bad_secret", "a key QR code is prefix:space:secret");
  }
  let space: string;
  try {
    space = new TextDecoder("utf-8", { fatal: true }).decode(unbase64url(encoded));
  } catch {
    throw new E2eError("bad_secret", "the QR code's space does not decode");
  }
  return { space, key: await importSecret(space, secret) };
}

/** The recovery code of `sub` that stands for `secret` (21 random bytes), shown once at enrolment. */
export async function renderRecoveryCode(sub: string, secret: Uint8Array): Promise<string> {
  if (secret.length !== RECOVERY_CODE_BYTES) throw new E2eError("invalid", `a recovery code holds ${RECOVERY_CODE_BYTES} bytes`);
  return render(CODE_LABEL, sub, secret);
}

/** The 21 secret bytes of a typed vault recovery code of `sub` (checksum checked). */
export async function parseRecoveryCode(sub: string, typed: string): Promise<Bytes> {
  return parse(CODE_LABEL, sub, typed, RECOVERY_CODE_BYTES);
}
