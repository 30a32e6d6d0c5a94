// The keyring and codec a client applies to values: spaces by whole segments,
// rotation keeps old versions readable, a moved or unknown-version value is
// refused with its code, plaintext is never accepted as sealed.
import assert from "node:assert/strict";
import { test } from "node:test";
import { E2eError } from "../../src/e2e/bytes.js";
import { E2eCodec, Keyring, inSpace } from "../../src/e2e/keyring.js";

async function code(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "opened";
  } catch (e) {
    assert.ok(e instanceof E2eError);
    return e.code;
  }
}

test("spaces cover their prefix by whole segments, the longest wins", () => {
  assert.ok(inSpace("orgs/acme", "orgs/acme/todos") && inSpace("orgs/acme", "orgs/acme"));
  assert.ok(!inSpace("orgs/acme", "orgs/acmex"));
  const ring = new Keyring();
  ring.createSpace("orgs/acme");
  ring.createSpace("orgs/acme/private");
  assert.equal(ring.spaceOf("orgs/acme/private/x"), "orgs/acme/private");
  assert.equal(ring.spaceOf("orgs/acme/todos"), "orgs/acme");
  assert.equal(ring.spaceOf("users/bob"), undefined);
  assert.throws(() => ring.createSpace("orgs//x"), E2eError);
  assert.throws(() => ring.insert("orgs/acme", { version: 1, secret: new Uint8Array(32) }), E2eError);
});

test("records seal and open by place; rotation keeps old versions; failures carry codes", async () => {
  const ring = new Keyring();
  ring.createSpace("users/alice");
  const codec = new E2eCodec(ring);
  const value = { title: "buy milk", done: false };
  const old = await codec.sealRecord("users/alice/todos", "t1", value);
  assert.equal(old[0], 1);
  assert.ok(!new TextDecoder().decode(old).includes("buy milk"), "sealed");
  ring.rotate("users/alice");
  const fresh = await codec.sealRecord("users/alice/todos", "t2", value);
  assert.equal(new DataView(fresh.buffer, fresh.byteOffset).getUint32(1), 2, "new writes use the new version");
  assert.deepEqual(await codec.openRecord("users/alice/todos", "t1", old), value);
  assert.deepEqual(await codec.openRecord("users/alice/todos", "t2", fresh), value);
  assert.equal(await code(codec.openRecord("users/alice/todos", "t9", old)), "tampered", "moved to another key");
  assert.equal(await code(codec.openRecord("users/alice/notes", "t1", old)), "tampered", "moved to another collection");
  assert.equal(await code(codec.openRecord("users/alice/todos", "t1", "plain")), "not_encrypted");
  assert.equal(await code(codec.openRecord("users/bob/todos", "t1", old)), "no_key");
  const stranger = new E2eCodec(new Keyring());
  stranger.keyring.insert("users/alice", { version: 1, secret: new Uint8Array(32).fill(9) });
  assert.equal(await code(stranger.openRecord("users/alice/todos", "t2", fresh)), "unknown_key");
  const message = await codec.sealMessage("users/alice/chat", "hi");
  assert.equal(await codec.openMessage("users/alice/chat", message), "hi");
  assert.equal(await code(codec.openRecord("users/alice/chat", "", message)), "tampered", "a message is not a record");
});
