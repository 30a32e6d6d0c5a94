// What the `@syncgate/client/e2e` entry point adds to the format modules: the
// Argon2id it ships (hash-wasm) against the Rust argon2 crate's vectors, the
// vectors' passphrase wraps opened with it, the `Encryption` codec, the QR code.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import jsQR from "jsqr";
import { Encryption, Keyring, argon2id, fromQrPayload, openPassphraseWrap, qrDataUrl, qrModules, qrSvg } from "../../src/e2e/index.js";
import { purpose } from "../../src/e2e/bytes.js";
import { Emitter } from "../../src/emitter.js";
import type { ClientEvents, Unreadable, Value, ValueCodecHost } from "../../src/types.js";

/** A client as the codec sees it: events, and an empty replica (the test calls `view` itself). */
function host(onChange: (c: string, keys: string[]) => void, unreadable: Unreadable[]): ValueCodecHost {
  const events = new Emitter<ClientEvents>();
  events.on("change", ({ collection, keys }) => onChange(collection, keys));
  events.on("unreadable", (u) => unreadable.push(u));
  const refuse = () => {
    throw new Error("not used here");
  };
  return { events, replica: { get: () => undefined, entries: () => [] }, collectionHost: { read: refuse, readAll: refuse, write: refuse } };
}

type Case = Record<string, unknown>;
const doc = JSON.parse(readFileSync(new URL("../../../../../proto/e2e-vectors.json", import.meta.url), "utf8")) as Record<string, Case[]>;
const unhex = (hex: unknown) => Uint8Array.from((hex as string).match(/../g) ?? [], (b) => parseInt(b, 16));
const hex = (data: Uint8Array) => [...data].map((b) => b.toString(16).padStart(2, "0")).join("");

test("hash-wasm's Argon2id gives the Rust argon2 crate's outputs", async () => {
  const vectors = doc["argon2id"] ?? [];
  assert.ok(vectors.length >= 2);
  for (const c of vectors) {
    const params = { m: c["m"] as number, t: c["t"] as number, p: c["p"] as number };
    const out = await argon2id(new TextEncoder().encode(c["password"] as string), unhex(c["salt"]), params);
    assert.equal(hex(out), c["output"], JSON.stringify(params));
  }
});

test("the vectors' passphrase wraps open with the shipped Argon2id", async () => {
  for (const c of doc["passphraseWraps"] ?? []) {
    const material = await openPassphraseWrap(argon2id, c["passphrase"] as string, purpose(...(c["purpose"] as string[])), unhex(c["wrap"]));
    assert.equal(hex(material), c["material"]);
  }
});

test("Encryption: own writes read at once, others' after opening, failures reported once and retried when a key arrives", async () => {
  const keyring = new Keyring();
  keyring.createSpace("users/alice");
  const writer = new Encryption(keyring);
  const changes: [string, string[]][] = [];
  const unreadable: Unreadable[] = [];
  writer.attach(host((c, keys) => changes.push([c, keys]), unreadable));
  assert.throws(() => writer.attach(host(() => undefined, [])), { code: "invalid" });
  const envelope = await writer.seal("users/alice/notes", "n1", { text: "hi" });
  assert.ok(envelope instanceof Uint8Array);
  assert.deepEqual(writer.view("users/alice/notes", "n1", envelope), { text: "hi" });

  // A reader without the key: nothing shown, one report, until the key comes.
  const readerKeys = new Keyring();
  const reader = new Encryption(readerKeys);
  const seen: [string, string[]][] = [];
  reader.attach(host((c, keys) => seen.push([c, keys]), unreadable));
  const copy: Value = new Uint8Array(envelope as Uint8Array);
  assert.equal(reader.view("users/alice/notes", "n1", copy), undefined);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(reader.view("users/alice/notes", "n1", copy), undefined);
  assert.equal(unreadable.length, 1);
  assert.match(unreadable[0]!.reason, /^no_key/);
  readerKeys.insert("users/alice", keyring.current("users/alice")!);
  assert.deepEqual(seen.at(-1), ["users/alice/notes", ["n1"]], "the client is told to read again");
  assert.equal(reader.view("users/alice/notes", "n1", copy), undefined, "opening");
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(reader.view("users/alice/notes", "n1", copy), { text: "hi" });
  assert.equal(unreadable.length, 1);
});

test("a key's QR code (uqr) scans back (jsQR) to the same space and key", async () => {
  const keyring = new Keyring();
  const key = keyring.createSpace("orgs/acme");
  const modules = await qrModules("orgs/acme", key);
  // Rasterise: 4 pixels a module, a 4-module quiet zone, RGBA.
  const scale = 4;
  const size = (modules.length + 8) * scale;
  const pixels = new Uint8ClampedArray(size * size * 4).fill(255);
  modules.forEach((row, y) =>
    row.forEach((dark, x) => {
      if (!dark) return;
      for (let dy = 0; dy < scale; dy++)
        for (let dx = 0; dx < scale; dx++) {
          const at = ((y + 4) * scale + dy) * size + (x + 4) * scale + dx;
          pixels.fill(0, at * 4, at * 4 + 3);
        }
    }),
  );
  // jsqr is CommonJS: under NodeNext its typed default is the module, at run time the function.
  const scan = jsQR as unknown as typeof jsQR.default;
  const scanned = scan(pixels, size, size);
  assert.ok(scanned !== null, "the code scans");
  const { space, key: imported } = await fromQrPayload(scanned.data);
  assert.equal(space, "orgs/acme");
  assert.equal(imported.version, key.version);
  assert.equal(hex(imported.secret), hex(key.secret));
  const svg = await qrSvg("orgs/acme", key);
  assert.match(svg, /^<svg[^>]*>/);
  assert.match(await qrDataUrl("orgs/acme", key), /^data:image\/svg\+xml;base64,/);
});
