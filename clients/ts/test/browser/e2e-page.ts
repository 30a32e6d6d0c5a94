// The page of the end-to-end encryption browser test: a client whose keys come
// from the vault (enrol, unlock with the password) or from a typed recovery
// secret, and a look at everything IndexedDB holds.
import { SyncgateClient, type Value } from "../../src/index.js";
import { DEFAULT_KDF, E2eCodec, Encryption, Keyring, VaultHttp, argon2id, exportSecret, importSecret } from "../../src/e2e/index.js";

const params = new URLSearchParams(location.search);
const sub = params.get("sub") ?? "alice";
const space = `users/${sub}`;
const getToken = async () => {
  const response = await fetch(`/token?sub=${encodeURIComponent(sub)}`);
  return response.ok ? response.text() : null;
};
// The page's origin forwards /vault to syncgate, as an app's own origin would.
const vault = new VaultHttp(location.origin, sub, async () => (await getToken()) ?? "", argon2id);
let client: SyncgateClient | null = null;
let keyring: Keyring | null = null;
const unreadable: unknown[] = [];

function start(keys: Keyring): SyncgateClient {
  keyring = keys;
  client = new SyncgateClient({
    url: params.get("ws") ?? "",
    name: `e2e-${sub}`,
    getToken,
    backoff: { initialMs: 100, maxMs: 1000 },
    encryption: new Encryption(keys),
  });
  client.on("unreadable", (u) => unreadable.push(u));
  return client;
}

/** Every value of every object store of every IndexedDB database of this origin, as text (bytes as Latin-1). */
async function idbText(): Promise<string> {
  const parts: string[] = [];
  const walk = (v: unknown): void => {
    if (v instanceof Uint8Array) parts.push(String.fromCharCode(...v));
    else if (v instanceof ArrayBuffer) walk(new Uint8Array(v));
    else if (typeof v === "string") parts.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (typeof v === "object" && v !== null) for (const [k, x] of Object.entries(v)) (parts.push(k), walk(x));
  };
  for (const info of await indexedDB.databases()) {
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      const request = indexedDB.open(info.name!);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    for (const store of Array.from(db.objectStoreNames)) {
      const all = await new Promise<unknown[]>((resolve, reject) => {
        const request = db.transaction(store).objectStore(store).getAll();
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
      });
      walk(all);
    }
    db.close();
  }
  return parts.join("\n");
}

(window as unknown as { e2e: unknown }).e2e = {
  /** First device: creates the vault and the space's key; returns the recovery code. */
  enrol: async (password: string) => {
    const { unlocked, recoveryCode } = await vault.enrol(password, { ...DEFAULT_KDF, m: 8192, t: 1 });
    const key = unlocked.keyring.createSpace(space);
    await vault.storeKey(unlocked, space, key);
    start(unlocked.keyring);
    return recoveryCode;
  },
  /** A reload or another device: the password opens the vault. */
  unlock: async (password: string) => {
    const keys = new Keyring();
    await vault.unlock(password, keys);
    start(keys);
  },
  /** Mode 2: the space's key typed in as its recovery secret. */
  importSecret: async (typed: string) => {
    const keys = new Keyring();
    keys.insert(space, await importSecret(space, typed));
    start(keys);
  },
  exportSecret: () => exportSecret(space, keyring!.current(space)!),
  connect: () => client!.connect(),
  ready: () => client!.ready,
  set: (collection: string, key: string, value: Value) => client!.collection(collection).set(key, value),
  entries: (collection: string) => client!.collection(collection).entries(),
  pending: () => client?.pending ?? -1,
  unreadable: () => unreadable,
  idbText,
  /** The benchmark (test/bench/e2e.ts): seal + open per record, and one Argon2id derivation at `DEFAULT_KDF`. */
  bench: async (records: number) => {
    const keys = new Keyring();
    keys.createSpace("bench");
    const codec = new E2eCodec(keys);
    const value = { title: "a todo of about a hundred bytes once encoded", done: false, tags: ["home", "errand"], at: 1764930000 };
    const started = performance.now();
    for (let i = 0; i < records; i++) await codec.openRecord("bench/todos", `k${i}`, await codec.sealRecord("bench/todos", `k${i}`, value));
    const perRecordUs = ((performance.now() - started) * 1000) / records;
    const kdfStarted = performance.now();
    await argon2id(new TextEncoder().encode("correct horse"), new Uint8Array(16), DEFAULT_KDF);
    return { perRecordUs, argon2Ms: performance.now() - kdfStarted, kdf: DEFAULT_KDF };
  },
};
