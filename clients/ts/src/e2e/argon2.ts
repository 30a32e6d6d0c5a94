// Argon2id for passphrase wraps. WebCrypto has no Argon2, so this is hash-wasm's
// WASM build (a maintained npm package), with the Rust client's settings:
// Argon2id version 0x13, 32 bytes of output, the cost parameters stored in the wrap.

import { argon2id as hashWasmArgon2id } from "hash-wasm";
import { E2eError } from "./bytes.js";
import type { Argon2id } from "./wraps.js";

/** Argon2id (v0x13, 32-byte output) through hash-wasm: what the vault and passphrase wraps take. */
export const argon2id: Argon2id = async (secret, salt, params) => {
  if (salt.length < 8) throw new E2eError("invalid", "an Argon2id salt has at least 8 bytes");
  return hashWasmArgon2id({
    password: secret,
    salt,
    memorySize: params.m,
    iterations: params.t,
    parallelism: params.p,
    hashLength: 32,
    outputType: "binary",
  });
};
