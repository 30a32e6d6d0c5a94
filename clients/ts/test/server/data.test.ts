// Collections and pub/sub against the real binary: refusals rolled back, retryable ones retried.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { SECRET, client, next, rulesFile, startServer, token } from "../harness.js";

const stops: (() => Promise<void>)[] = [];
after(async () => {
  // Clients first (they were pushed after their servers), then the servers.
  for (const stop of stops.reverse()) await stop();
});

test("a write the rules refuse is rolled back, and reported", async () => {
  const server = await startServer(["--jwt-secret", SECRET, "--rules", rulesFile()]);
  stops.push(server.stop);
  const c = client({ url: server.url, getToken: () => token("alice") });
  const mine = c.collection("users/alice/todos");
  const shared = c.collection("shared/board");
  c.connect();
  await next(c, "synced", (e) => e.collection === "shared/board");
  const ok = await mine.set("t1", { title: "buy milk" });
  const bad = await shared.set("title", "vandalised");
  assert.equal(shared.get("title"), "vandalised", "visible at once");
  const refused = await next(c, "opSettled", (e) => e.opId === bad);
  assert.deepEqual([refused.ok, refused.code], [false, "forbidden"]);
  assert.equal(shared.get("title"), undefined, "rolled back");
  await next(c, "opSettled", (e) => e.opId === ok && e.ok).catch(() => undefined);
  assert.deepEqual(mine.get("t1"), { title: "buy milk" });
  assert.equal(c.pending, 0);
  await c.close();
});

test("under a tight message rate the client paces itself: three SYNCs and a replay, never a 4029", async () => {
  // 2 messages a second, a burst of 3: AUTH, three SYNCs and the replay batch
  // sent at once overrun it; before pacing, the client was refused, retried,
  // was closed with 4029 and started again, without end.
  const server = await startServer(["--jwt-secret", SECRET, "--messages-per-second", "2", "--message-burst", "3"]);
  stops.push(server.stop);
  const c = client({ url: server.url, getToken: () => token("alice") });
  stops.push(() => c.close());
  const ids = await Promise.all(["a", "b", "c"].map((name) => c.collection(name).set("k", name)));
  const problems: string[] = [];
  c.on("error", (e) => problems.push(e.message));
  c.on("disconnected", (e) => problems.push(`closed ${e.code}: ${e.reason}`));
  const synced = Promise.all(["a", "b", "c"].map((name) => next(c, "synced", (e) => e.collection === name)));
  const settled = Promise.all(ids.map((id) => next(c, "opSettled", (e) => e.opId === id)));
  c.connect();
  await synced;
  assert.ok((await settled).every((e) => e.ok));
  assert.deepEqual(problems, [], "nothing was refused and the connection stayed");
  await c.close();
});

test("pub/sub: a publication reaches a subscriber, from the publisher's sub", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  stops.push(server.stop);
  const listener = client({ url: server.url, getToken: () => token("listener") });
  const speaker = client({ url: server.url, getToken: () => token("speaker") });
  stops.push(() => listener.close(), () => speaker.close());
  const got: unknown[] = [];
  listener.subscribe("rooms/lobby", (data, from) => got.push([data, from]));
  const connected = Promise.all([next(listener, "connected"), next(speaker, "connected")]);
  listener.connect();
  speaker.connect();
  await connected;
  for (let i = 0; i < 50 && got.length === 0; i++) {
    await speaker.publish("rooms/lobby", { text: "hi" });
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual(got[0], [{ text: "hi" }, "speaker"]);
});

test("a large outbox replays in batches cut to the server's message size", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  stops.push(server.stop);
  const c = client({ url: server.url, getToken: () => token("alice") });
  const big = c.collection("big");
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push(await big.set(`k${i}`, new Uint8Array(250 * 1024).fill(i)));
  const huge = await big.set("huge", new Uint8Array(300 * 1024));
  const outcomes = new Map<string, boolean>();
  c.on("opSettled", (e) => outcomes.set(e.opId, e.ok));
  c.connect();
  for (let i = 0; i < 100 && outcomes.size < 6; i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(ids.map((id) => outcomes.get(id)), [true, true, true, true, true]);
  assert.equal(outcomes.get(huge), false, "too large for any batch: refused locally");
  await c.close();
});
