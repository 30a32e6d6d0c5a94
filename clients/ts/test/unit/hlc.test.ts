import assert from "node:assert/strict";
import { test } from "node:test";
import { compareHlc, formatHlc, HlcClock, parseHlc } from "../../src/hlc.js";

test("stamps parse, format and order like the server's", () => {
  const h = parseHlc("1800000000000:3:node:with:colons");
  assert.deepEqual(h, { millis: 1800000000000, counter: 3, node: "node:with:colons" });
  assert.equal(formatHlc(h!), "1800000000000:3:node:with:colons");
  for (const bad of ["", "1", "1:2", "1:2:", "a:2:n", "1:-2:n", "1:65536:n", "1:2:\n", " 1:2:n"]) {
    assert.equal(parseHlc(bad), null, JSON.stringify(bad));
  }
  const order = ["1:0:b", "1:1:a", "2:0:a", "2:0:b", "2:0:é"].map((s) => parseHlc(s)!);
  for (let i = 1; i < order.length; i++) assert.equal(compareHlc(order[i - 1]!, order[i]!), -1);
});

test("the clock is monotonic, absorbs, and cannot be frozen or dragged ahead", () => {
  const clock = new HlcClock("me", { millis: 0, counter: 0 }, 60_000);
  const a = clock.tick(100);
  const b = clock.tick(100);
  const c = clock.tick(50);
  assert.ok(compareHlc(a, b) < 0 && compareHlc(b, c) < 0);
  const now = 1_000_000;
  assert.equal(clock.observe(parseHlc("1070000:65535:evil")!, now), false, "70 s ahead is not absorbed");
  assert.deepEqual(clock.tick(now), { millis: now, counter: 0, node: "me" });
  assert.equal(clock.observe(parseHlc("1059000:65535:peer")!, now), true);
  assert.deepEqual(clock.tick(now), { millis: 1_059_001, counter: 0, node: "me" }, "a full counter moves on");
});
