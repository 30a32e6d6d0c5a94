// The end-to-end encryption vectors of proto/e2e-vectors.json (made by an
// implementation independent of both clients), checked against this client's
// WebCrypto implementation: envelopes byte for byte, every tampered case
// refused with its code, key wraps, passphrase wraps, grants, recovery strings.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { E2eError, purpose } from "../../src/e2e/bytes.js";
import { type Binding, associatedData, open, seal } from "../../src/e2e/envelope.js";
import { exportSecret, fromQrPayload, importSecret, parseRecoveryCode, qrPayload } from "../../src/e2e/recovery.js";
import { type Argon2id, openGrant, openKeyWrap, openPassphraseWrap, publicKeyOf, sealGrant } from "../../src/e2e/wraps.js";
import { decodeValue } from "../../src/codec.js";
import { keyItem, unlockWithPassword, unlockWithRecoveryCode } from "../../src/e2e/vault.js";

type Case = Record<string, unknown>;
const doc = JSON.parse(readFileSync(new URL("../../../../../proto/e2e-vectors.json", import.meta.url), "utf8")) as Record<string, Case[]>;

const unhex = (hex: unknown) => Uint8Array.from((hex as string).match(/../g) ?? [], (b) => parseInt(b, 16));
const hex = (data: Uint8Array) => [...data].map((b) => b.toString(16).padStart(2, "0")).join("");
const str = (v: unknown) => v as string;
const num = (v: unknown) => v as number;
const cases = (name: string): Case[] => {
  const all = doc[name];
  assert.ok(all !== undefined && all.length > 0, `vectors have ${name}`);
  return all;
};
const binding = (c: Case): Binding => ({
  kind: str(c["kind"]) as Binding["kind"],
  space: str(c["space"]),
  place: str(c["place"]),
  key: str(c["key"]),
});
const key = (c: Case, secret = "dataKey") => ({ version: num(c["keyVersion"]), secret: unhex(c[secret]) });

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "opened";
  } catch (e) {
    assert.ok(e instanceof E2eError, `an E2eError, not ${String(e)}`);
    return e.code;
  }
}

test("envelopes seal and open byte for byte", async () => {
  for (const c of cases("envelopes")) {
    assert.equal(hex(associatedData(binding(c), num(c["keyVersion"]))), c["aad"], `${str(c["name"])}: aad`);
    const value = decodeValue(unhex(c["plaintext"]));
    const sealed = await seal(key(c), binding(c), value, unhex(c["nonce"]));
    assert.equal(hex(sealed), c["envelope"], `${str(c["name"])}: envelope`);
    assert.deepEqual(await open(key(c), binding(c), sealed), value);
    const fresh = await seal(key(c), binding(c), value);
    assert.notEqual(hex(fresh), hex(sealed), "a random nonce each time");
    assert.deepEqual(await open(key(c), binding(c), fresh), value);
  }
});

test("tampered envelopes are refused with the named code", async () => {
  for (const c of cases("tampered")) {
    assert.equal(await refusal(open(key(c), binding(c), unhex(c["envelope"]))), c["error"], str(c["name"]));
  }
});

// Argon2id is the app's WASM library in production (WebCrypto has none);
// here a stand-in answers from the vectors' own Argon2id cases and refuses anything else.
const argon2FromVectors: Argon2id = async (secret, salt, params) => {
  const match = cases("argon2id").find(
    (c) =>
      hex(new TextEncoder().encode(str(c["password"]))) === hex(secret) &&
      c["salt"] === hex(salt) &&
      c["m"] === params.m &&
      c["t"] === params.t &&
      c["p"] === params.p,
  );
  if (match === undefined) throw new Error("no Argon2id vector for these inputs");
  return unhex(match["output"]);
};

test("key wraps, passphrase wraps and grants open as made, and only so", async () => {
  for (const c of cases("keyWraps")) {
    const parts = purpose(...(c["purpose"] as string[]));
    assert.equal(hex(await openKeyWrap(unhex(c["wrappingKey"]), parts, unhex(c["wrap"]))), c["material"]);
    assert.equal(await refusal(openKeyWrap(unhex(c["wrappingKey"]), purpose("other"), unhex(c["wrap"]))), "tampered");
  }
  for (const c of cases("passphraseWraps")) {
    const parts = purpose(...(c["purpose"] as string[]));
    assert.equal(hex(await openPassphraseWrap(argon2FromVectors, str(c["passphrase"]), parts, unhex(c["wrap"]))), c["material"]);
    assert.equal(await refusal(openPassphraseWrap(argon2FromVectors, str(c["passphrase"]), purpose("other"), unhex(c["wrap"]))), "tampered");
  }
  for (const c of cases("grants")) {
    const mine = unhex(c["recipientSecret"]);
    assert.equal(hex(await publicKeyOf(mine)), c["recipientPublic"]);
    const opened = await openGrant(str(c["space"]), unhex(c["grant"]), mine, str(c["recipientSub"]));
    assert.equal(opened.version, c["keyVersion"]);
    assert.equal(hex(opened.secret), c["dataKey"]);
    assert.equal(await refusal(openGrant(str(c["space"]), unhex(c["grant"]), mine, "mallory")), "tampered");
    assert.equal(await refusal(openGrant("orgs/other", unhex(c["grant"]), mine, str(c["recipientSub"]))), "tampered");
    // And a grant this client seals opens again (with a fresh ephemeral key each time).
    const sealed = await sealGrant(str(c["space"]), key(c), unhex(c["recipientPublic"]), str(c["recipientSub"]));
    assert.equal(hex((await openGrant(str(c["space"]), sealed, mine, str(c["recipientSub"]))).secret), c["dataKey"]);
  }
});

test("recovery secrets, QR payloads and recovery codes match the vectors", async () => {
  for (const c of cases("recoverySecrets")) {
    const space = str(c["space"]);
    assert.equal(await exportSecret(space, key(c)), c["secret"]);
    assert.equal(hex((await importSecret(space, str(c["secret"]).toLowerCase().replace(/-/g, " "))).secret), c["dataKey"]);
    assert.equal(await qrPayload(space, key(c)), c["qr"]);
    const scanned = await fromQrPayload(str(c["qr"]));
    assert.equal(scanned.space, space);
    assert.equal(hex(scanned.key.secret), c["dataKey"]);
    assert.equal(await refusal(importSecret("orgs/other", str(c["secret"]))), "bad_secret");
    const typo = str(c["secret"]).replace(/^(.)/, (ch) => (ch === "A" ? "B" : "A"));
    assert.equal(await refusal(importSecret(space, typo)), "bad_secret");
  }
  for (const c of cases("recoveryCodes")) {
    assert.equal(hex(await parseRecoveryCode(str(c["sub"]), str(c["code"]))), c["secret"]);
    assert.equal(await refusal(parseRecoveryCode("mallory", str(c["code"]))), "bad_secret");
  }
});

test("a vault made elsewhere unlocks with its password and its recovery code", async () => {
  for (const c of cases("vaults")) {
    const items = new Map<string, Uint8Array>(
      Object.entries(c["items"] as Record<string, string>).map(([name, value]) => [name, unhex(value)]),
    );
    const sub = str(c["sub"]);
    for (const unlocked of [
      await unlockWithPassword(argon2FromVectors, sub, str(c["password"]), items),
      await unlockWithRecoveryCode(argon2FromVectors, sub, str(c["recoveryCode"]), items),
    ]) {
      assert.equal(hex(unlocked.identity.public), c["identityPublic"]);
      assert.equal(hex(unlocked.identity.secret), c["identitySecret"]);
      for (const expected of c["spaceKeys"] as Case[]) {
        assert.equal(hex(unlocked.keyring.version(str(expected["space"]), num(expected["version"]))?.secret ?? new Uint8Array()), expected["dataKey"]);
      }
      // A key item this client makes opens again under the same master key.
      const [name, value] = await keyItem(unlocked, "orgs/acme", { version: 3, secret: new Uint8Array(32).fill(4) });
      items.set(name, value);
    }
    const reopened = await unlockWithPassword(argon2FromVectors, sub, str(c["password"]), items);
    assert.equal(hex(reopened.keyring.version("orgs/acme", 3)?.secret ?? new Uint8Array()), "04".repeat(32));
    assert.equal(await refusal(unlockWithRecoveryCode(argon2FromVectors, "mallory", str(c["recoveryCode"]), items)), "bad_secret");
    items.delete("identity");
    assert.equal(await refusal(unlockWithPassword(argon2FromVectors, sub, str(c["password"]), items)), "invalid");
  }
});
