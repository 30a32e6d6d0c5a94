import assert from "node:assert/strict";
import { test } from "node:test";
import { IDBFactory } from "fake-indexeddb";
import { IndexedDBStorage } from "../../src/idb.js";
import { MemoryStorage, type Storage } from "../../src/storage.js";

async function roundTrip(make: () => Storage): Promise<void> {
  const storage = make();
  await storage.apply({ deviceId: "d1", clock: { millis: 5, counter: 1 } });
  await storage.apply({
    put: [
      { collection: "c", record: { key: "a", value: { x: 1 }, hlc: "1:0:n" } },
      { collection: "c", record: { key: "b", value: null, hlc: "2:0:n" } },
      { collection: "other", record: { key: "z", value: "v", hlc: "3:0:n" } },
    ],
    cursors: [{ collection: "c", cursor: "e:2" }],
    addOps: [{ opId: "o1", collection: "c", key: "a", value: 2, hlc: "4:0:n" }],
    clock: { millis: 4, counter: 0 },
  });
  await storage.apply({ clear: ["c"], put: [{ collection: "c", record: { key: "a", value: 3, hlc: "5:0:n" } }] });
  await storage.apply({ removeOps: ["missing"] });
  storage.close();
  const again = make();
  const saved = await again.load();
  assert.equal(saved.deviceId, "d1");
  assert.deepEqual(saved.clock, { millis: 5, counter: 1 }, "the clock only moves forward");
  const c = saved.collections.find((x) => x.name === "c");
  assert.deepEqual(c, { name: "c", cursor: "e:2", records: [{ key: "a", value: 3, hlc: "5:0:n" }] });
  assert.deepEqual((await again.loadCollection("other")).records, [{ key: "z", value: "v", hlc: "3:0:n" }]);
  assert.deepEqual((await again.loadOutbox()).map((op) => op.opId), ["o1"]);
  await again.apply({ removeOps: ["o1"] });
  assert.deepEqual(await again.loadOutbox(), []);
  again.close();
}

test("IndexedDB storage keeps records, cursors, outbox and clock across reopening", async () => {
  const factory = new IDBFactory();
  await roundTrip(() => new IndexedDBStorage("test", factory));
});

test("memory storage shares data by name, like tabs", async () => {
  await roundTrip(() => new MemoryStorage("shared-test"));
});

test("close() resolves once IndexedDB is closed, and clear() deletes the database", async () => {
  const { SyncgateClient } = await import("../../src/client.js");
  const factory = new IDBFactory();
  const client = new SyncgateClient({ url: "ws://127.0.0.1:1/ws", storage: new IndexedDBStorage("closing", factory) });
  await client.collection("c").set("k", "v");
  await client.close();
  // A connection still open would block the deletion (onblocked) until it closed.
  const deleted = await new Promise<string>((resolve) => {
    const req = factory.deleteDatabase("syncgate:closing");
    req.onblocked = () => resolve("blocked");
    req.onsuccess = () => resolve("deleted");
  });
  assert.equal(deleted, "deleted");
  const again = new SyncgateClient({ url: "ws://127.0.0.1:1/ws", storage: new IndexedDBStorage("cleared", factory) });
  await again.collection("c").set("k", "v");
  await again.clear();
  const reopened = new IndexedDBStorage("cleared", factory);
  assert.deepEqual((await reopened.load()).outbox, [], "sign-out deleted the outbox");
  await reopened.close();
});
