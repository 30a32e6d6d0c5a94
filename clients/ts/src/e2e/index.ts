/**
 * `@syncgate/client/e2e`: end-to-end encryption for `SyncgateClient`, in its
 * own entry point so that apps that do not encrypt do not ship it.
 *
 * ```ts
 * import { Encryption, Keyring, VaultHttp, argon2id, DEFAULT_KDF } from "@syncgate/client/e2e";
 * const keyring = new Keyring();
 * const vault = new VaultHttp("https://sync.example.com", "alice", getToken, argon2id);
 * await vault.unlock(password, keyring);            // mode 3: another device
 * const client = new SyncgateClient({ url, getToken, encryption: new Encryption(keyring) });
 * ```
 *
 * The format (envelope, wraps, grants, recovery strings, vault items) is
 * proto/E2E.md's, the same as the Rust client's.
 */
export { Encryption } from "./encryption.js";
export { Keyring, E2eCodec, inSpace } from "./keyring.js";
export { E2eError } from "./bytes.js";
export { type DataKey, type Binding, seal, open, keyVersion, FORMAT_VERSION } from "./envelope.js";
export { argon2id } from "./argon2.js";
export {
  type Argon2id,
  type KdfParams,
  DEFAULT_KDF,
  sealPassphraseWrap,
  openPassphraseWrap,
  sealGrant,
  openGrant,
  publicKeyOf,
} from "./wraps.js";
export { exportSecret, importSecret, qrPayload, fromQrPayload, parseRecoveryCode } from "./recovery.js";
export { qrSvg, qrDataUrl, qrModules } from "./qr.js";
export { type Unlocked, VaultHttp, unlockWithPassword, unlockWithRecoveryCode, keyItem } from "./vault.js";
