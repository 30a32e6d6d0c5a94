// A record or a publication whose value breaks the value rule (a map key that
// is not a string, an extension type) is set aside and reported; the client
// keeps its connection and uses everything else. The "server" here is a
// scripted socket, since the real one refuses such values at the door.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Decoder, Encoder, ExtData } from "@msgpack/msgpack";
import { MemoryStorage, NotSavedError, SyncgateClient } from "../../src/index.js";
import type { WebSocketLike } from "../../src/connector.js";
import type { ClientEvents, Unreadable } from "../../src/types.js";

const encoder = new Encoder();
const decoder = new Decoder();

/** A placeholder replaced by raw bytes that no JavaScript value encodes to. */
const POISON = "\u0001poison\u0001";
/** `{[1, 2]: "boom"}`: a map whose key is an array. */
const MAP_WITH_ARRAY_KEY = Uint8Array.of(0x81, 0x92, 0x01, 0x02, 0xa4, 0x62, 0x6f, 0x6f, 0x6d);
/** `{1: "boom"}`: a map whose key is an integer. */
const MAP_WITH_INTEGER_KEY = Uint8Array.of(0x81, 0x01, 0xa4, 0x62, 0x6f, 0x6f, 0x6d);

/** `bytes` with every occurrence of `placeholder` replaced by `raw`. */
function splice(bytes: Uint8Array, placeholder: Uint8Array, raw: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < bytes.length; ) {
    if (placeholder.every((b, j) => bytes[i + j] === b)) {
      out.push(...raw);
      i += placeholder.length;
    } else {
      out.push(bytes[i]!);
      i += 1;
    }
  }
  return Uint8Array.from(out);
}

/** Sockets the client opened, newest last. */
const sockets: FakeSocket[] = [];

/** A WebSocket whose server is the test: it authenticates at once (mode none) and answers SYNC and SUB. */
class FakeSocket {
  binaryType = "arraybuffer";
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  closed: { code: number | undefined; reason: string | undefined } | null = null;

  constructor(readonly url: string) {
    sockets.push(this);
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
      this.push({ type: "AUTH_ACK", sub: "anonymous", roles: [], expiresAt: null });
    }, 0);
  }

  /** Sends `message` to the client; each `POISON` string in it is sent as the raw `poison` bytes instead. */
  push(message: unknown, poison: Uint8Array = MAP_WITH_ARRAY_KEY): void {
    const bytes = splice(encoder.encode(message), encoder.encode(POISON), poison);
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }

  send(data: Uint8Array): void {
    const message = decoder.decode(data) as { type: string; id: number; collection?: string; topic?: string };
    if (message.type === "SYNC") {
      this.push({
        type: "SYNC_DATA",
        id: message.id,
        collection: message.collection,
        records: [
          { key: "good", value: { title: "fine" }, hlc: "1:0:server" },
          { key: "bad", value: POISON, hlc: "2:0:server" },
          { key: "ext", value: new ExtData(42, Uint8Array.of(1)), hlc: "3:0:server" },
        ],
        cursor: "1:3",
      });
    } else if (message.type === "SUB") {
      this.push({ type: "OK", id: message.id });
    } else if (message.type === "OP_BATCH") {
      const ops = (message as unknown as { ops: { opId: string }[] }).ops;
      this.push({ type: "OP_RESULT", id: message.id, results: ops.map((op) => ({ opId: op.opId, ok: true })) });
    }
  }

  close(code?: number, reason?: string): void {
    this.closed = { code, reason };
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code: code ?? 1005, reason: reason ?? "" }), 0);
  }
}

function next<K extends keyof ClientEvents>(client: SyncgateClient, event: K, pred: (e: ClientEvents[K]) => boolean = () => true) {
  return new Promise<ClientEvents[K]>((resolve) => {
    const off = client.on(event, (e) => {
      if (pred(e)) {
        off();
        resolve(e);
      }
    });
  });
}

test("a poisoned record and a poisoned message are set aside; the connection stays", async () => {
  const client = new SyncgateClient({
    url: "ws://fake/ws",
    storage: "memory",
    name: `unreadable-${Math.random()}`,
    WebSocket: FakeSocket as unknown as WebSocketLike,
  });
  const unreadable: Unreadable[] = [];
  client.on("unreadable", (u) => unreadable.push(u));
  const board = client.collection("board");
  const heard: unknown[] = [];
  client.subscribe("room", (data) => heard.push(data));
  const synced = next(client, "synced", (e) => e.collection === "board");
  client.connect();
  await synced;
  assert.deepEqual(board.get("good"), { title: "fine" }, "the readable record is used");
  assert.equal(board.get("bad"), undefined);
  assert.deepEqual(
    unreadable.map((u) => [u.collection, u.key]),
    [
      ["board", "bad"],
      ["board", "ext"],
    ],
  );
  const socket = sockets[sockets.length - 1]!;
  socket.push({ type: "MESSAGE", topic: "room", data: POISON, from: "mallory" }, MAP_WITH_INTEGER_KEY);
  socket.push({ type: "MESSAGE", topic: "room", data: "hello", from: "alice" });
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(heard, ["hello"], "the poisoned publication is dropped, the next one arrives");
  assert.equal(unreadable[2]?.topic, "room");
  socket.push({ type: "CHANGE" } as unknown);
  socket.onmessage?.({ data: Uint8Array.of(0xc1).buffer });
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(socket.closed, null, "nothing closed the connection");
  assert.ok(unreadable.some((u) => u.reason.startsWith("undecodable")), "undecodable bytes are reported");
  await client.close();
});

test("a value outside the value rule is refused when it is written", async () => {
  const client = new SyncgateClient({ url: "ws://fake/ws", storage: "memory", name: `rule-${Math.random()}`, WebSocket: FakeSocket as unknown as WebSocketLike });
  const c = client.collection("c");
  let deep: unknown = 1;
  for (let i = 0; i < 20; i++) deep = [deep];
  await assert.rejects(c.set("deep", deep as never), /deeper than 16/);
  await assert.rejects(c.set("date", new Date() as never), /extension type/);
  await c.set("fine", { a: [1, 2, 3] });
  assert.equal(c.get("deep"), undefined);
  await client.close();
});

test("a write whose local save fails is still queued, reported as unsaved, and settles", async () => {
  class FailingStorage extends MemoryStorage {
    failing = false;
    override async apply(change: Parameters<MemoryStorage["apply"]>[0]): Promise<void> {
      if (this.failing && change.addOps) throw new Error("disk full");
      return super.apply(change);
    }
  }
  const storage = new FailingStorage(`failing-${Math.random()}`);
  const client = new SyncgateClient({ url: "ws://fake/ws", storage, WebSocket: FakeSocket as unknown as WebSocketLike });
  const c = client.collection("c");
  const connected = next(client, "connected");
  client.connect();
  await connected;
  storage.failing = true;
  const settled = next(client, "opSettled");
  const error = await c.set("k", "kept").then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(error instanceof NotSavedError, `expected NotSavedError, got ${String(error)}`);
  assert.equal(c.get("k"), "kept", "still visible");
  const outcome = await settled;
  assert.deepEqual([outcome.opId, outcome.ok], [error.opId, true], "it reached the server all the same");
  await client.close();
});
