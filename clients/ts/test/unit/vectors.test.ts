// The interop vectors of proto/vectors.json, checked against this client's codec.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { decodeMessage, encodeMessage } from "../../src/codec.js";
import type { ClientMessage } from "../../src/types.js";

interface Vector {
  name: string;
  hex: string;
  message: Record<string, unknown>;
}

const doc = JSON.parse(readFileSync(new URL("../../../../../proto/vectors.json", import.meta.url), "utf8")) as {
  client: Vector[];
  server: Vector[];
};

const bytes = (hex: string) => Uint8Array.from(hex.split(" ").map((b) => parseInt(b, 16)));
const hex = (data: Uint8Array) => [...data].map((b) => b.toString(16).padStart(2, "0")).join(" ");

test("every client message encodes to exactly the vector's bytes", () => {
  assert.ok(doc.client.length >= 8);
  for (const v of doc.client) {
    assert.equal(hex(encodeMessage(v.message as unknown as ClientMessage)), v.hex, v.name);
  }
});

test("every server message decodes to the vector's form", () => {
  assert.ok(doc.server.length >= 11);
  for (const v of doc.server) {
    assert.deepEqual(decodeMessage(bytes(v.hex)), v.message, v.name);
  }
});
