// End-to-end encryption through the real server: mode 3 (the key vault at
// /vault/{sub}: enrol, a second device unlocks, both converge; a third device
// restores with the recovery code) and mode 2 (a key carried by its recovery
// secret). The server and the client's storage only ever see envelopes.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { encode } from "@msgpack/msgpack";
import { MemoryStorage, type SyncgateClient } from "../../src/index.js";
import { Encryption, Keyring, VaultHttp, argon2id, exportSecret, importSecret, type KdfParams } from "../../src/e2e/index.js";
import { SECRET, client, next, startServer, token, type Server } from "../harness.js";

// Small Argon2id costs keep the test quick; the parameters travel with each wrap.
const KDF: KdfParams = { m: 4096, t: 1, p: 1 };
const MARKER = "PLAINTEXT-MARKER-7f3a";

const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

async function e2eServer(): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "sg-e2e-rules-"));
  writeFileSync(
    join(dir, "rules.toml"),
    `[[rules]]
roles = ["user"]
resource = "users/{sub}/**"
actions = ["read", "write"]

[[rules]]
roles = ["user"]
resource = "vault/{sub}/**"
actions = ["read", "write"]
`,
  );
  const server = await startServer(["--jwt-secret", SECRET, "--rules", join(dir, "rules.toml"), "--auth-failures-per-minute", "1000"]);
  stops.push(server.stop);
  return server;
}

function device(server: Server, sub: string, keyring: Keyring, storage = new MemoryStorage()): SyncgateClient {
  const c = client({ url: server.url, getToken: () => token(sub), storage, encryption: new Encryption(keyring) });
  stops.push(() => c.close());
  return c;
}

function vault(server: Server, sub: string): VaultHttp {
  return new VaultHttp(`http://${server.addr}`, sub, async () => token(sub), argon2id);
}

/** Waits (10 s at most) until `check` holds, re-checking on every change event. */
async function until(c: SyncgateClient, check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await next(c, "change", () => true, 500).catch(() => undefined);
  }
}

/** Whether `bytes` contain the marker anywhere. */
function holdsMarker(bytes: Uint8Array): boolean {
  return Buffer.from(bytes).includes(MARKER);
}

test("mode 3: enrol, a second device unlocks through the vault, both converge; the recovery code restores a third", async () => {
  const server = await e2eServer();
  const { unlocked, recoveryCode } = await vault(server, "alice").enrol("correct horse", KDF);
  const key = unlocked.keyring.createSpace("users/alice");
  await vault(server, "alice").storeKey(unlocked, "users/alice", key);

  // Device A writes offline first: its outbox and replica hold the envelope, never the plaintext.
  const storageA = new MemoryStorage();
  const a = device(server, "alice", unlocked.keyring, storageA);
  const notesA = a.collection("users/alice/notes");
  const written = await notesA.set("n1", { text: `${MARKER} from A` });
  assert.deepEqual(notesA.get("n1"), { text: `${MARKER} from A` }, "the app reads plaintext at once");
  const offline = await storageA.load();
  assert.equal(offline.outbox.length, 1);
  assert.ok(offline.outbox[0]!.value instanceof Uint8Array, "the queued op holds an envelope");
  assert.equal(holdsMarker(encode(offline)), false, "no plaintext in the stored outbox");
  a.connect();
  assert.equal((await next(a, "opSettled", (e) => e.opId === written)).ok, true);

  // What the server keeps and sends is MessagePack bin without the marker.
  const plain = client({ url: server.url, getToken: () => token("alice") });
  stops.push(() => plain.close());
  const raw = plain.collection("users/alice/notes");
  plain.connect();
  await raw.whenSynced();
  const stored = raw.get("n1");
  assert.ok(stored instanceof Uint8Array, "the server holds bin");
  assert.equal(holdsMarker(stored), false);

  // Device B: a fresh keyring, filled from the vault with the password.
  await assert.rejects(vault(server, "alice").unlock("wrong horse", new Keyring()), { code: "tampered" });
  const keyringB = new Keyring();
  await vault(server, "alice").unlock("correct horse", keyringB);
  const b = device(server, "alice", keyringB);
  const notesB = b.collection("users/alice/notes");
  b.connect();
  await until(b, () => notesB.get("n1") !== undefined, "B to read n1");
  assert.deepEqual(notesB.get("n1"), { text: `${MARKER} from A` });
  await notesB.set("n2", { text: "from B" });
  await until(a, () => notesA.get("n2") !== undefined, "A to read B's write");
  assert.deepEqual(notesA.entries(), notesB.entries(), "converged");
  assert.equal(holdsMarker(encode((await storageA.load()).collections)), false, "A's replica holds no plaintext");

  // Device C lost the password: the recovery code opens the vault, then a new password is set.
  const keyringC = new Keyring();
  const restored = await vault(server, "alice").restore(recoveryCode, keyringC);
  await vault(server, "alice").changePassword(restored, "new horse", KDF);
  const c = device(server, "alice", keyringC);
  const notesC = c.collection("users/alice/notes");
  c.connect();
  await until(c, () => notesC.entries().length === 2, "C to read both notes");
  assert.deepEqual(notesC.entries(), notesA.entries());
  await vault(server, "alice").unlock("new horse", new Keyring());
  await assert.rejects(vault(server, "alice").unlock("correct horse", new Keyring()), { code: "tampered" });
});

test("a record that does not open is reported with its collection and key and left as it is; the rest reads on", async () => {
  const server = await e2eServer();
  const keyring = new Keyring();
  keyring.createSpace("users/carol");
  const a = device(server, "carol", keyring);
  const notes = a.collection("users/carol/notes");
  a.connect();
  await notes.set("good", { text: "fine" });
  await until(a, () => a.pending === 0, "the write to settle");
  // The plaintext is checked before sealing: sealed, any value would pass as `bin`.
  await assert.rejects(notes.set("bad", new Map() as unknown as string), { code: "invalid", message: /Map or a Set/ });
  assert.equal(a.pending, 0, "nothing queued");

  // Another writer (no encryption) copies the envelope to another key, and writes plaintext.
  const plain = client({ url: server.url, getToken: () => token("carol") });
  stops.push(() => plain.close());
  const raw = plain.collection("users/carol/notes");
  plain.connect();
  await raw.whenSynced();
  const unreadable: { collection?: string; key?: string; reason: string }[] = [];
  a.on("unreadable", (u) => unreadable.push(u));
  await raw.set("moved", raw.get("good")!);
  await raw.set("clear", "not sealed");
  await until(a, () => unreadable.length === 2, "two unreadable reports");
  const byKey = Object.fromEntries(unreadable.map((u) => [u.key, u]));
  assert.equal(byKey["moved"]?.collection, "users/carol/notes");
  assert.match(byKey["moved"]!.reason, /^tampered/);
  assert.match(byKey["clear"]!.reason, /^not_encrypted/);
  assert.equal(notes.get("moved"), undefined);
  assert.deepEqual(notes.entries(), [["good", { text: "fine" }]]);
  assert.ok(raw.get("moved") instanceof Uint8Array, "the server's record is untouched");
});

test("mode 2: a second device imports the key by its recovery secret, and records that waited for it open", async () => {
  const server = await e2eServer();
  const keyringA = new Keyring();
  const key = keyringA.createSpace("users/dave");
  const a = device(server, "dave", keyringA);
  const notesA = a.collection("users/dave/notes");
  a.connect();
  await notesA.set("n1", { text: "secret plans" });
  await until(a, () => a.pending === 0, "the write to settle");
  const typed = await exportSecret("users/dave", key);

  // Device B syncs before it has the key: the record is unreadable (no_key), not shown.
  const keyringB = new Keyring();
  const b = device(server, "dave", keyringB);
  const notesB = b.collection("users/dave/notes");
  const missing = next(b, "unreadable", (u) => u.key === "n1");
  b.connect();
  assert.match((await missing).reason, /^no_key/);
  assert.equal(notesB.get("n1"), undefined);
  await assert.rejects(notesB.set("n2", "x"), { code: "no_key" });
  await assert.rejects(importSecret("users/dave", typed.replace(/^./, (ch) => (ch === "A" ? "B" : "A"))), { code: "bad_secret" });

  // Typed in (lower case, as a user might): the record opens without a reload.
  keyringB.insert("users/dave", await importSecret("users/dave", typed.toLowerCase()));
  await until(b, () => notesB.get("n1") !== undefined, "n1 to open once the key is there");
  assert.deepEqual(notesB.get("n1"), { text: "secret plans" });
  await notesB.set("n2", { text: "from B" });
  await until(a, () => notesA.get("n2") !== undefined, "A to read B's write");
  assert.deepEqual(notesA.entries(), notesB.entries());
});
