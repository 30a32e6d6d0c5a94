// The interop vectors of proto/vectors.json, checked against this client's codec.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { decodeMessage, decodeValue, encodeMessage } from "../../src/codec.js";
import { Replica } from "../../src/replica.js";
import type { ClientMessage } from "../../src/types.js";

interface Vector {
  name: string;
  hex: string;
  message: Record<string, unknown>;
}

interface Side {
  hlc: string;
  value: string;
}

const doc = JSON.parse(readFileSync(new URL("../../../../../proto/vectors.json", import.meta.url), "utf8")) as {
  client: Vector[];
  server: Vector[];
  lww: { cases: { name: string; current: Side; incoming: Side; replica: "replaces" | "keeps" }[] };
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

test("the replica keeps what the last-writer-wins cases say, deciding by stamps alone", () => {
  assert.ok(doc.lww.cases.length >= 12);
  for (const c of doc.lww.cases) {
    const replica = new Replica("reader");
    const [current, incoming] = [decodeValue(bytes(c.current.value)), decodeValue(bytes(c.incoming.value))];
    replica.merge("c", [{ key: "k", value: current, hlc: c.current.hlc }], 0);
    replica.merge("c", [{ key: "k", value: incoming, hlc: c.incoming.hlc }], 0);
    const winner = c.replica === "replaces" ? incoming : current;
    assert.deepEqual(replica.get("c", "k"), winner === null ? undefined : winner, c.name);
  }
});
