// The interop vectors of proto/vectors.json, checked against this client's codec.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { decodeMessage, decodeValue, encodeMessage } from "../../src/codec.js";
import { Replica } from "../../src/replica.js";
import { closeAction, isFinalOpCode } from "../../src/codes.js";
import { compareHlc, formatHlc, MAX_MILLIS, parseHlc } from "../../src/hlc.js";
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

const sections = JSON.parse(readFileSync(new URL("../../../../../proto/vectors.json", import.meta.url), "utf8")) as {
  presence: { client: Vector[]; server: Vector[] };
  hlc: {
    maxMillis: number;
    parse: { text: string; ok: boolean; millis?: number; counter?: number; node?: string; format?: string }[];
    order: string[];
  };
  closeCodes: { cases: { code: number | null; action: string }[] };
  opCodes: { final: string[]; retryable: string[] };
};

test("presence messages: client ones encode to the vector's bytes, server ones decode to its form", () => {
  assert.ok(sections.presence.client.length >= 3 && sections.presence.server.length >= 4);
  for (const v of sections.presence.client) assert.equal(hex(encodeMessage(v.message as unknown as ClientMessage)), v.hex, v.name);
  for (const v of sections.presence.server) assert.deepEqual(decodeMessage(bytes(v.hex)), v.message, v.name);
});

test("HLC stamps parse, format and order as the vectors say", () => {
  assert.equal(sections.hlc.maxMillis, MAX_MILLIS);
  assert.ok(sections.hlc.parse.length >= 20);
  for (const c of sections.hlc.parse) {
    const parsed = parseHlc(c.text);
    if (!c.ok) {
      assert.equal(parsed, null, JSON.stringify(c.text));
      continue;
    }
    assert.deepEqual(parsed, { millis: c.millis, counter: c.counter, node: c.node }, c.text);
    assert.equal(formatHlc(parsed!), c.format);
  }
  const order = sections.hlc.order.map((text) => parseHlc(text)!);
  for (let i = 0; i < order.length; i++) {
    for (let j = 0; j < order.length; j++) {
      assert.equal(compareHlc(order[i]!, order[j]!), Math.sign(i - j), `${sections.hlc.order[i]} vs ${sections.hlc.order[j]}`);
    }
  }
});

test("the close-code table and the op codes are the vectors'", () => {
  const camel = (action: string) => action.replace(/_(.)/g, (_, c: string) => c.toUpperCase());
  assert.ok(sections.closeCodes.cases.length >= 12);
  for (const c of sections.closeCodes.cases) assert.equal(closeAction(c.code), camel(c.action), String(c.code));
  for (const code of sections.opCodes.final) assert.ok(isFinalOpCode(code), code);
  for (const code of sections.opCodes.retryable) assert.ok(!isFinalOpCode(code), code);
});
