import assert from "node:assert/strict";
import { test } from "node:test";
import { Replica } from "../../src/replica.js";
import type { OpOutcome } from "../../src/types.js";

const outcome = (opId: string, ok: boolean, code?: string): OpOutcome => (code ? { opId, ok, code } : { opId, ok });

test("a refused write rolls back to the server's value", () => {
  const r = new Replica("dev");
  r.merge("c", [{ key: "k", value: "server", hlc: "100:0:srv" }], 100);
  const op = r.write("c", "k", "mine", 200);
  assert.equal(r.get("c", "k"), "mine", "visible at once");
  const report = r.settle([outcome(op.opId, false, "forbidden")], 200);
  assert.equal(report.settled[0]?.code, "forbidden");
  assert.equal(r.get("c", "k"), "server");
  assert.equal(r.outbox.length, 0);
});

test("a retryable refusal keeps the write queued and visible", () => {
  const r = new Replica("dev");
  const op = r.write("c", "k", "mine", 200);
  for (const code of ["unavailable", "rate_limited", "something_new"]) {
    const report = r.settle([outcome(op.opId, false, code)], 200);
    assert.deepEqual(report.retrying, [{ opId: op.opId, code }]);
    assert.equal(report.settled.length, 0);
    assert.equal(r.get("c", "k"), "mine");
  }
});

test("last writer wins, deletes hide, and an equal stamp keeps what is held", () => {
  const r = new Replica("dev");
  const op = r.write("c", "k", "offline", 100);
  r.merge("c", [{ key: "k", value: "newer", hlc: "500:0:other" }], 100);
  assert.equal(r.get("c", "k"), "newer", "a later write wins even over a pending one");
  r.settle([outcome(op.opId, true)], 600);
  const del = r.write("c", "k", null, 600);
  assert.equal(r.get("c", "k"), undefined);
  r.settle([outcome(del.opId, true)], 600);
  assert.deepEqual(r.entries("c"), []);
  // The server refuses a second value under one stamp, so an equal stamp is
  // the same write again: what the replica holds stays.
  const a = new Replica("a");
  a.merge("c", [{ key: "k", value: 121, hlc: "7:0:n" }, { key: "k", value: 255, hlc: "7:0:n" }], 7);
  assert.deepEqual(a.entries("c"), [["k", 121]]);
});

test("a reset drops confirmed records but keeps pending writes; cursors move forward per epoch", () => {
  const r = new Replica("dev");
  r.merge("c", [{ key: "gone", value: 1, hlc: "1:0:s" }, { key: "kept", value: 1, hlc: "1:0:s" }], 1);
  r.write("c", "mine", 2, 200);
  r.reset("c");
  r.merge("c", [{ key: "kept", value: 1, hlc: "1:0:s" }], 200);
  assert.deepEqual(r.entries("c").map(([k]) => k), ["kept", "mine"]);
  r.setCursor("c", "a:10");
  r.setCursor("c", "a:7");
  assert.equal(r.cursor("c"), "a:10");
  r.setCursor("c", "b:3");
  assert.equal(r.cursor("c"), "b:3", "a restored store's epoch replaces it");
});

test("op ids never repeat, even with the clock going back", () => {
  const ids = new Set<string>();
  for (let i = 0; i < 3; i++) {
    const r = new Replica("dev");
    ids.add(r.write("c", "k", 1, 1000 - i * 100).opId);
    ids.add(r.write("c", "k", 2, 1000 - i * 100).opId);
  }
  assert.equal(ids.size, 6);
});

test("a stored op that was settled meanwhile is not brought back (it would be sent twice)", () => {
  const r = new Replica("dev");
  const op = r.write("c", "k", 1, 100);
  const stale = [...r.outbox];
  r.settle([outcome(op.opId, true)], 100);
  r.addOps(stale);
  assert.equal(r.outbox.length, 0);
});
