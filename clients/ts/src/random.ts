/** Random ids from the platform's CSPRNG (`crypto.getRandomValues`), never `Math.random`. */
export function randomId(length: number): string {
  let id = "";
  for (const b of globalThis.crypto.getRandomValues(new Uint8Array(length))) id += (b % 36).toString(36);
  return id;
}

/** 32 random bits as 8 hex digits. */
export function randomHex32(): string {
  return globalThis.crypto.getRandomValues(new Uint32Array(1))[0]!.toString(16).padStart(8, "0");
}
