// Second-round defects against the real binary: a loser never persisted, stored data
// announced, subscriptions released, repeated refusals stopping, liveness, states.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import WebSocket from "ws";
import type { WebSocketLike } from "../../src/link.js";
import { MemoryStorage } from "../../src/storage.js";
import { SyncgateError } from "../../src/errors.js";
import { countingProxy } from "../browser/env.js";
import { SECRET, client, next, record, rewritingWebSocket, sleep, startServer, token } from "../harness.js";

const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

test("(1) an op that lost to a newer record is settled without its value reaching storage", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  stops.push(server.stop);
  // The first replay is answered "rate_limited" (the server in fact stored it): the op is retried later.
  let first = true;
  const WebSocket = rewritingWebSocket((m) => {
    if (m.type !== "OP_RESULT" || !first) return m;
    first = false;
    return { ...m, results: (m.results as { opId: string }[]).map((r) => ({ opId: r.opId, ok: false, code: "rate_limited" })) };
  });
  const a = client({ url: server.url, getToken: () => token("alice"), WebSocket, storage: new MemoryStorage("loser"), backoff: { initialMs: 4000, maxMs: 4000 } });
  const other = client({ url: server.url, getToken: () => token("alice") });
  stops.push(() => other.close());
  const notes = a.collection("notes");
  a.connect();
  other.connect();
  await next(a, "synced");
  const retrying = next(a, "opRetrying");
  const opId = await notes.set("k", "old");
  await retrying;
  // While the op waits, a newer value is written elsewhere and reaches this replica.
  const arrived = next(a, "change", (e) => e.keys.includes("k") && notes.get("k") === "new");
  await other.collection("notes").set("k", "new");
  await arrived;
  const settled = await next(a, "opSettled", (e) => e.opId === opId);
  assert.equal(settled.ok, true, "accepted: last-writer-wins, not an error");
  assert.equal(notes.get("k"), "new");
  await a.close();
  // A reload, offline: what storage holds is what the page shows.
  const reloaded = client({ url: server.url, storage: new MemoryStorage("loser") });
  await reloaded.ready;
  assert.equal(reloaded.collection("notes").get("k"), "new", "storage holds the winner, not the op");
  await reloaded.close();
});

test("(2) loading the stored replica fires change, without connecting", async () => {
  const storage = new MemoryStorage("stored");
  await storage.apply({ put: [{ collection: "todos", record: { key: "t1", value: "stored", hlc: "1:0:x" } }] });
  const c = client({ url: "ws://127.0.0.1:1/ws", storage: new MemoryStorage("stored") });
  const seen: [string, unknown][][] = [];
  const todos = c.collection("todos");
  const changed = new Promise<void>((resolve) =>
    todos.subscribe(() => {
      seen.push(todos.entries());
      resolve();
    }),
  );
  await changed;
  assert.deepEqual(seen[0], [["t1", "stored"]], "the README's render-on-change pattern shows stored data");
  await c.close();
});

test("(4) unsubscribing sends UNSUB and closing the last handle UNSYNC: the subscription limit is never reached", async () => {
  const server = await startServer(["--jwt-secret", SECRET, "--max-subscriptions", "2"]);
  stops.push(server.stop);
  const c = client({ url: server.url, getToken: () => token("alice") });
  const errors = record(c, ["error"]);
  c.connect();
  await next(c, "connected");
  for (let i = 0; i < 5; i++) {
    const unsubscribe = c.subscribe(`rooms/t${i}`, () => undefined);
    await unsubscribe.live();
    unsubscribe();
    const a = c.collection(`rooms/c${i}`);
    const b = c.collection(`rooms/c${i}`);
    await a.whenSynced();
    assert.equal(a.synced, true);
    a.close();
    assert.equal(b.state, "live", "one holder left: still synced");
    b.close();
  }
  // The last topic still delivers: the server holds at most this one subscription.
  const got: unknown[] = [];
  const last = c.subscribe("rooms/last", (data) => got.push(data));
  await last.live();
  await c.publish("rooms/last", "hello");
  for (let i = 0; i < 50 && got.length === 0; i++) await sleep(20);
  assert.deepEqual(got, ["hello"]);
  assert.deepEqual(errors, [], "never too_many_subscriptions");
  await c.close();
});

test("(7) a refused subscription and sync say so, with the code", async () => {
  const server = await startServer(["--jwt-secret", SECRET, "--rules", (await import("../harness.js")).rulesFile()]);
  stops.push(server.stop);
  const c = client({ url: server.url, getToken: () => token("alice") });
  const errors: SyncgateError[] = [];
  c.on("error", (e) => errors.push(e.error));
  c.connect();
  const sub = c.subscribe("users/bob/secret", () => undefined);
  assert.equal(sub.state, "subscribing");
  await assert.rejects(sub.live(), (e: unknown) => e instanceof SyncgateError && e.code === "forbidden");
  assert.deepEqual([sub.state, sub.code], ["refused", "forbidden"]);
  const col = c.collection("users/bob/todos");
  await assert.rejects(col.whenSynced(), (e: unknown) => e instanceof SyncgateError && e.code === "forbidden");
  assert.deepEqual([col.state, col.synced], ["refused", false]);
  const mine = c.collection("users/alice/todos");
  assert.equal(mine.synced, false, "not loaded yet is not empty");
  await mine.whenSynced();
  assert.deepEqual([mine.state, mine.synced, mine.entries()], ["live", true, []]);
  assert.ok(errors.some((e) => e.code === "forbidden" && e.context.collection === "users/bob/todos"));
  assert.ok(errors.some((e) => e.code === "forbidden" && e.context.topic === "users/bob/secret"));
  await c.close();
});

test("(5) three refused tokens in a row stop the client with the refusal's code", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  stops.push(server.stop);
  let asked = 0;
  const c = client({ url: server.url, getToken: () => (asked++, token("alice", ["user"], "1h", "another-secret-0123456789abcdef-xx")) });
  const connecting = record(c, ["connecting"]);
  const disconnects: string[] = [];
  c.on("disconnected", (e) => disconnects.push(e.reason));
  c.connect();
  const stopped = await next(c, "stopped");
  assert.deepEqual([stopped.code, stopped.authCode], [4001, "token_invalid"]);
  assert.equal(connecting.length, 3);
  assert.equal(asked, 3);
  assert.equal(c.state, "stopped");
  await sleep(500);
  assert.equal(asked, 3, "no further attempt");
  assert.ok(!disconnects[0]!.includes("token_invalid: token_invalid"), `the code is said once: ${disconnects[0]}`);
  await c.close();
});

test("(6) a connection that stops answering is noticed by PING and replaced", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  stops.push(server.stop);
  const proxy = await countingProxy(server.addr);
  stops.push(async () => proxy.close());
  const c = client({ url: `ws://127.0.0.1:${proxy.port}/ws`, getToken: () => token("alice"), ping: { intervalMs: 300, timeoutMs: 300 } });
  c.connect();
  await next(c, "connected");
  await sleep(1000);
  assert.equal(c.state, "connected", "PINGs answered keep a quiet connection");
  proxy.stall();
  const dropped = await next(c, "disconnected", () => true, 3000);
  assert.match(dropped.reason, /PING/);
  proxy.unstall();
  await next(c, "connected", () => true, 5000);
  await c.close();
});

test("(9) presence: members, joins and leaves, re-announced after a reconnect", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  stops.push(server.stop);
  const proxy = await countingProxy(server.addr);
  stops.push(async () => proxy.close());
  const alice = client({ url: server.url, getToken: () => token("alice") });
  const bob = client({ url: `ws://127.0.0.1:${proxy.port}/ws`, getToken: () => token("bob") });
  const here = alice.presence("rooms/lobby", { info: "reading" });
  const bobHere = bob.presence("rooms/lobby");
  const joins: string[] = [];
  const leaves: string[] = [];
  here.on("join", (m) => joins.push(m.sub));
  here.on("leave", (m) => leaves.push(m.sub));
  alice.connect();
  bob.connect();
  const both = async (p: { members(): { sub: string }[] }) => {
    for (let i = 0; i < 100 && p.members().length < 2; i++) await sleep(30);
    return p.members().map((m) => m.sub).sort();
  };
  assert.deepEqual(await both(here), ["alice", "bob"]);
  assert.deepEqual(await both(bobHere), ["alice", "bob"]);
  assert.equal(bobHere.members().find((m) => m.sub === "alice")?.info, "reading");
  // Bob's connection drops: he leaves, and is back once reconnected.
  proxy.block();
  for (let i = 0; i < 100 && !leaves.includes("bob"); i++) await sleep(30);
  assert.ok(leaves.includes("bob"));
  proxy.unblock();
  for (let i = 0; i < 200 && here.members().length < 2; i++) await sleep(30);
  assert.deepEqual(here.members().map((m) => m.sub).sort(), ["alice", "bob"], "re-announced after the reconnect");
  bobHere.close();
  for (let i = 0; i < 100 && here.members().length > 1; i++) await sleep(30);
  assert.deepEqual(here.members().map((m) => m.sub), ["alice"], "closing the handle leaves");
  assert.ok(joins.filter((s) => s === "bob").length >= 2);
  await alice.close();
  await bob.close();
});

test("one device, two users: another identity's replica is neither shown nor replayed, and kept", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  stops.push(server.stop);
  const alice = client({ url: server.url, getToken: () => token("alice"), user: "alice", name: "device", storage: new MemoryStorage("device") });
  alice.connect();
  const notes = alice.collection("rooms/alice-notes");
  await notes.whenSynced();
  await notes.set("seen", "private");
  await next(alice, "opSettled");
  await alice.close();
  // Offline, Alice writes once more, then signs out without syncing.
  const offline = client({ url: server.url, user: "alice", name: "device", storage: new MemoryStorage("device") });
  await offline.collection("rooms/alice-notes").set("queued", "not yet sent");
  await offline.close();
  const bob = client({ url: server.url, getToken: () => token("bob"), user: "bob", name: "device", storage: new MemoryStorage("device") });
  await bob.ready;
  assert.deepEqual(bob.collection("rooms/alice-notes").entries(), [], "Alice's records are not shown to Bob");
  assert.equal(bob.pending, 0, "nor her outbox");
  bob.connect();
  const stopped = await next(bob, "stopped");
  assert.equal(stopped.authCode, "identity_mismatch");
  await bob.close();
  const check = client({ url: server.url, getToken: () => token("carol") });
  const view = check.collection("rooms/alice-notes");
  check.connect();
  await view.whenSynced();
  assert.deepEqual(view.entries(), [["seen", "private"]], "her queued write was never replayed under Bob's token");
  // Kept for her: she signs in again and it goes out.
  const back = client({ url: server.url, getToken: () => token("alice"), user: "alice", name: "device", storage: new MemoryStorage("device") });
  await back.ready;
  assert.equal(back.pending, 1);
  back.connect();
  await next(back, "opSettled");
  for (let i = 0; i < 100 && view.entries().length < 2; i++) await sleep(30);
  assert.deepEqual(view.entries().map(([k]) => k), ["queued", "seen"]);
  // Sign-out deletes the replica.
  await back.clear();
  const after = client({ url: server.url, user: "alice", name: "device", storage: new MemoryStorage("device") });
  await after.ready;
  assert.deepEqual(after.collection("rooms/alice-notes").entries(), []);
  await after.close();
  await check.close();
});

test("a sync refused as forbidden drops the collection's local records, on screen and on disk", async () => {
  const { rulesFile } = await import("../harness.js");
  const server = await startServer(["--jwt-secret", SECRET, "--rules", rulesFile()]);
  stops.push(server.stop);
  // What an earlier session (or another identity) left in this storage.
  const storage = new MemoryStorage("forbidden");
  await storage.apply({ put: [{ collection: "users/bob/todos", record: { key: "t1", value: "bob's", hlc: "1:0:x" } }], cursors: [{ collection: "users/bob/todos", cursor: "0" }] });
  const c = client({ url: server.url, getToken: () => token("alice"), storage: new MemoryStorage("forbidden") });
  const todos = c.collection("users/bob/todos");
  await c.ready;
  assert.deepEqual(todos.entries(), [["t1", "bob's"]]);
  c.connect();
  await assert.rejects(todos.whenSynced(), (e: unknown) => e instanceof SyncgateError && e.code === "forbidden");
  for (let i = 0; i < 50 && todos.entries().length > 0; i++) await sleep(20);
  assert.deepEqual(todos.entries(), []);
  assert.deepEqual((await storage.loadCollection("users/bob/todos")).records, []);
  await c.close();
});

test("a retry timer armed for a dead connection never holds back the next one", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  stops.push(server.stop);
  // The op is refused as retryable three times (each retry backs off longer); the
  // third answer takes 300 ms to save and the connection dies meanwhile, so the old
  // connection's handler arms its (long) retry after the connection died, before
  // the quicker reconnect.
  class SlowStorage extends MemoryStorage {
    delay = 0;
    override async apply(change: Parameters<MemoryStorage["apply"]>[0]): Promise<void> {
      const delay = this.delay;
      this.delay = 0;
      if (delay > 0) await sleep(delay);
      return super.apply(change);
    }
  }
  const storage = new SlowStorage();
  let answers = 0;
  class Dying extends (WebSocket as unknown as new (url: string) => { terminate(): void }) {
    set onmessage(handler: ((event: { data: unknown }) => void) | null) {
      const parent = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage")!;
      parent.set!.call(
        this,
        handler &&
          ((event: { data: ArrayBuffer }) => {
            const message = decode(new Uint8Array(event.data)) as { type: string; results?: { opId: string }[] };
            if (message.type !== "OP_RESULT" || answers >= 3) return handler(event);
            answers++;
            const bytes = encode({ ...message, results: message.results!.map((r) => ({ opId: r.opId, ok: false, code: "rate_limited" })) });
            if (answers === 3) storage.delay = 300;
            handler({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
            if (answers === 3) this.terminate();
          }),
      );
    }
  }
  const c = client({ url: server.url, getToken: () => token("alice"), storage, backoff: { initialMs: 1000, maxMs: 60_000 }, WebSocket: Dying as unknown as WebSocketLike });
  const notes = c.collection("notes");
  c.connect();
  await notes.whenSynced();
  const opId = await notes.set("k", "v");
  await next(c, "disconnected");
  await next(c, "connected", () => true, 10_000);
  const reconnectedAt = Date.now();
  const settled = await next(c, "opSettled", (e) => e.opId === opId, 10_000);
  assert.equal(settled.ok, true);
  assert.ok(Date.now() - reconnectedAt < 1000, `sent at once on the new connection, not after the old one's timer (${Date.now() - reconnectedAt} ms)`);
  await c.close();
});
