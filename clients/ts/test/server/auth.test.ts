// The client against the real binary: every auth mode, refresh, expiry, and the close-code rules.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, test } from "node:test";
import { SECRET, client, next, record, sleep, startServer, token } from "../harness.js";

const stops: (() => Promise<void>)[] = [];
after(async () => {
  // Clients first (they were pushed after their servers), then the servers.
  for (const stop of stops.reverse()) await stop();
});

test("mode none: AUTH_ACK at once, as anonymous", async () => {
  const server = await startServer(["--auth", "none", "--anonymous-roles", "guest"]);
  stops.push(server.stop);
  const c = client({ url: server.url });
  c.connect();
  const ack = await next(c, "connected");
  assert.deepEqual([ack.sub, ack.roles, ack.expiresAt], ["anonymous", ["guest"], null]);
  await c.close();
});

test("mode token: the static secret in the AUTH frame", async () => {
  const server = await startServer(["--auth", "token", "--token", "static-secret-value", "--token-sub", "home"]);
  stops.push(server.stop);
  const c = client({ url: server.url, getToken: () => "static-secret-value" });
  c.connect();
  assert.equal((await next(c, "connected")).sub, "home");
  await c.close();
});

test("mode jwt: getToken in the AUTH frame, or in the URL when asked", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  stops.push(server.stop);
  const reasons: string[] = [];
  const c = client({ url: server.url, getToken: (reason) => (reasons.push(reason), token("alice")) });
  c.connect();
  const ack = await next(c, "connected");
  assert.equal(ack.sub, "alice");
  assert.ok(ack.expiresAt! > Date.now() / 1000);
  assert.deepEqual(reasons, ["connect"]);
  await c.close();
  const q = client({ url: server.url, tokenIn: "query", getToken: () => token("bob") });
  q.connect();
  assert.equal((await next(q, "connected")).sub, "bob");
  await q.close();
});

test("mode introspect: the identity provider's answer decides", async () => {
  const idp = createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      const { token: presented } = JSON.parse(body) as { token: string };
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(presented === "opaque-good" ? { active: true, sub: "carol" } : { active: false }));
    });
  });
  await new Promise<void>((r) => idp.listen(0, "127.0.0.1", r));
  stops.push(() => new Promise((r) => idp.close(() => r())));
  const url = `http://127.0.0.1:${(idp.address() as AddressInfo).port}/introspect`;
  const server = await startServer(["--auth", "introspect", "--introspect-url", url, "--introspect-token", "internal"]);
  stops.push(server.stop);
  const c = client({ url: server.url, getToken: () => "opaque-good" });
  c.connect();
  assert.equal((await next(c, "connected")).sub, "carol");
  await c.close();
});

test("refresh in band before expiry, without reconnecting", async () => {
  const server = await startServer(["--jwt-secret", SECRET, "--expiry-notice", "2", "--jwt-leeway", "0"]);
  stops.push(server.stop);
  const reasons: string[] = [];
  const c = client({
    url: server.url,
    getToken: (reason) => (reasons.push(reason), token("alice", ["user"], reason === "connect" ? "3" : "1h")),
  });
  const seen = record(c, ["connected", "disconnected"]);
  c.connect();
  await next(c, "connected");
  await sleep(4500);
  assert.ok(reasons.includes("refresh"), `refreshed: ${reasons.join(",")}`);
  assert.deepEqual(seen.map((e) => e.kind), ["connected"], "no reconnect: the session outlived its first token");
  await c.close();
});

test("expiry without a new token: 4100, then a stop when the provider has none", async () => {
  const server = await startServer(["--jwt-secret", SECRET, "--expiry-notice", "1", "--jwt-leeway", "0"]);
  stops.push(server.stop);
  const c = client({ url: server.url, getToken: (reason) => (reason === "connect" ? token("alice", ["user"], "2") : null) });
  c.connect();
  await next(c, "connected");
  assert.equal((await next(c, "disconnected")).code, 4100);
  await next(c, "stopped");
  await c.close();
});

test("4001 asks for a new token ('rejected'), then connects", async () => {
  const server = await startServer(["--jwt-secret", SECRET]);
  stops.push(server.stop);
  const reasons: string[] = [];
  const c = client({
    url: server.url,
    getToken: (reason) => {
      reasons.push(reason);
      return reason === "rejected" ? token("alice") : token("alice", ["user"], "1h", "a-wrong-secret-0123456789abcdefghij");
    },
  });
  c.connect();
  assert.equal((await next(c, "disconnected")).code, 4001);
  await next(c, "connected");
  assert.deepEqual(reasons, ["connect", "rejected"]);
  await c.close();
});

test("4003 stops the client", async () => {
  const admin = "admin-token-0123456789abcdef0123456789";
  const server = await startServer(["--jwt-secret", SECRET, "--admin-token", admin]);
  stops.push(server.stop);
  const c = client({ url: server.url, getToken: () => token("mallory") });
  c.connect();
  await next(c, "connected");
  const res = await fetch(`http://${server.addr}/admin/disconnect`, {
    method: "POST",
    headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
    body: JSON.stringify({ sub: "mallory" }),
  });
  assert.equal(res.status, 200);
  assert.equal((await next(c, "stopped")).code, 4003);
  assert.equal(c.state, "stopped");
  await c.close();
});
