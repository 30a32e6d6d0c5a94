import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffDelay } from "../../src/backoff.js";
import { closeAction, isFinalOpCode } from "../../src/codes.js";

test("the close-code table is proto/'s (and the Rust client's)", () => {
  const table: [number | null, string][] = [
    [null, "reconnect"],
    [1000, "reconnect"],
    [1001, "reconnect"],
    [1002, "stop"],
    [1009, "stop"],
    [4000, "stop"],
    [4001, "newToken"],
    [4003, "stop"],
    [4008, "reconnect"],
    [4029, "backOff"],
    [4100, "refreshToken"],
    [4200, "resync"],
    [4999, "reconnect"],
  ];
  for (const [code, action] of table) assert.equal(closeAction(code), action, String(code));
});

test("op codes are final or retryable", () => {
  for (const code of ["forbidden", "invalid", "clock_skew", "stale"]) assert.ok(isFinalOpCode(code), code);
  for (const code of ["unavailable", "rate_limited", "from_the_future"]) assert.ok(!isFinalOpCode(code), code);
});

test("backoff grows, stays bounded and jitters", () => {
  const options = { initialMs: 100, maxMs: 2000 };
  for (let attempt = 0; attempt < 40; attempt++) {
    const ceiling = Math.min(2000, 100 * 2 ** Math.min(attempt, 20));
    const d = backoffDelay(options, attempt);
    assert.ok(d >= ceiling / 2 && d <= ceiling, `${attempt}: ${d}`);
  }
  assert.equal(backoffDelay(options, 3, () => 0), 400);
  assert.equal(backoffDelay(options, 3, () => 1), 800);
});
