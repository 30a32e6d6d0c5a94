// The pacer keeps a connection's frames within the announced rate.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Pacer } from "../../src/pacer.js";

test("frames beyond the burst wait their turn; without limits nothing waits", async () => {
  const sent: number[] = [];
  let now = 1_000;
  const pacer = new Pacer((frame) => sent.push(frame[0]!), () => now);
  pacer.send(Uint8Array.of(0)); // the AUTH, before the limits are known
  pacer.setLimits(10, 4); // 9 a second here, 3 at once, one of them spent on the AUTH
  for (let i = 1; i <= 5; i++) pacer.send(Uint8Array.of(i));
  assert.deepEqual(sent, [0, 1, 2], "two more at once");
  assert.equal(pacer.waiting, 3);
  now += 1_000; // the clock moves; the pacer's timer takes them out in order
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.deepEqual(sent, [0, 1, 2, 3, 4, 5]);
  pacer.clear();

  const free: number[] = [];
  const unpaced = new Pacer((frame) => free.push(frame[0]!));
  unpaced.setLimits(0, 0);
  for (let i = 0; i < 100; i++) unpaced.send(Uint8Array.of(i));
  assert.equal(free.length, 100);
});
