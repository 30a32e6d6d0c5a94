// Tabs and React in Chromium against the real binary: a tab that never connects, a
// follower tab's edit against a fast clock, two browsers' presence, and React hooks
// that follow their arguments.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { SECRET, client, next, startServer, token, type Server } from "../harness.js";
import { launch, staticServer } from "./env.js";

let browser: Browser;
let site: { port: number; close: () => Promise<void> };
let server: Server;
const contexts: BrowserContext[] = [];

before(async () => {
  site = await staticServer();
  server = await startServer(["--jwt-secret", SECRET]);
  browser = await launch();
});

after(async () => {
  for (const c of contexts) await c.close();
  await browser?.close();
  await server?.stop();
  await site?.close();
});

async function context(): Promise<BrowserContext> {
  const c = await browser.newContext();
  contexts.push(c);
  return c;
}

type Sg = {
  set(c: string, k: string, v: unknown): Promise<string>;
  entries(c: string): [string, unknown][];
  state(): string;
  pending(): number;
  members(): string[];
};

async function open(ctx: BrowserContext, q: Record<string, string>, collections: string[] = []): Promise<Page> {
  const page = await ctx.newPage();
  const params = new URLSearchParams({ ws: server.url, ...q });
  for (const c of collections) params.append("collection", c);
  await page.goto(`http://127.0.0.1:${site.port}/?${params}`);
  await page.waitForFunction(() => "sg" in window);
  return page;
}

test("a tab that never connects does not hold the connection for the others", async () => {
  const ctx = await context();
  // First in: a tab still on its login page (it made a client but never connected).
  await open(ctx, { name: "lazy", sub: "lena", connect: "0" }, ["rooms/lazy"]);
  const active = await open(ctx, { name: "lazy", sub: "lena" }, ["rooms/lazy"]);
  await active.waitForFunction(() => (window as unknown as { sg: Sg }).sg.state() === "connected", null, { timeout: 10_000 });
  await active.evaluate(() => (window as unknown as { sg: Sg }).sg.set("rooms/lazy", "k", "sent"));
  await active.waitForFunction(() => (window as unknown as { sg: Sg }).sg.pending() === 0, null, { timeout: 10_000 });
});

test("a follower tab's edit wins over a record stamped by a clock 20 s fast", async () => {
  const ctx = await context();
  const leader = await open(ctx, { name: "clock", sub: "fay" }, ["rooms/fay-doc"]);
  await leader.waitForFunction(() => (window as unknown as { sg: Sg }).sg.state() === "connected");
  const follower = await open(ctx, { name: "clock", sub: "fay" }, ["rooms/fay-doc"]);
  // A phone whose clock runs 20 s ahead (within the allowed drift) writes the title.
  const realNow = Date.now;
  Date.now = () => realNow() + 20_000;
  const phone = client({ url: server.url, getToken: () => token("fay") });
  try {
    phone.connect();
    const id = await phone.collection("rooms/fay-doc").set("title", "from the phone");
    await next(phone, "opSettled", (e) => e.opId === id);
  } finally {
    Date.now = realNow;
  }
  await phone.close();
  for (const page of [leader, follower]) {
    await page.waitForFunction(() => JSON.stringify((window as unknown as { sg: Sg }).sg.entries("rooms/fay-doc")) === '[["title","from the phone"]]');
  }
  await follower.evaluate(() => (window as unknown as { sg: Sg }).sg.set("rooms/fay-doc", "title", "renamed in the follower tab"));
  await leader.waitForFunction(() => (window as unknown as { sg: Sg }).sg.pending() === 0);
  await leader.waitForFunction(() => JSON.stringify((window as unknown as { sg: Sg }).sg.entries("rooms/fay-doc")) === '[["title","renamed in the follower tab"]]', null, { timeout: 5000 });
  const check = client({ url: server.url, getToken: () => token("fay") });
  const doc = check.collection("rooms/fay-doc");
  check.connect();
  await doc.whenSynced();
  assert.deepEqual(doc.entries(), [["title", "renamed in the follower tab"]], "the edit the user saw last is the one kept");
  await check.close();
});

test("a follower tab's handle on what the leader already syncs or subscribes is live at once", async () => {
  const ctx = await context();
  const leader = await open(ctx, { name: "known", sub: "kim" }, ["rooms/known"]);
  await leader.waitForFunction(() => (window as unknown as { sg: Sg }).sg.state() === "connected");
  type Handles = { client: { collection(n: string): { whenSynced(): Promise<void>; synced: boolean }; subscribe(t: string, h: () => void): { live(): Promise<void> } } };
  await leader.evaluate(() => (window as unknown as { sg: Handles }).sg.client.subscribe("rooms/known-topic", () => undefined).live());
  await leader.evaluate(() => (window as unknown as { sg: Handles }).sg.client.collection("rooms/known").whenSynced());
  const follower = await open(ctx, { name: "known", sub: "kim" });
  await follower.waitForFunction(() => (window as unknown as { sg: Sg }).sg.state() === "connected", null, { timeout: 5000 });
  const synced = await follower.evaluate(async () => {
    const c = (window as unknown as { sg: Handles }).sg.client;
    const timeout = new Promise<string>((r) => setTimeout(() => r("timed out"), 3000));
    const col = c.collection("rooms/known");
    const topic = c.subscribe("rooms/known-topic", () => undefined);
    return Promise.race([Promise.all([col.whenSynced(), topic.live()]).then(() => `synced=${col.synced}`), timeout]);
  });
  assert.equal(synced, "synced=true");
});

test("a closed tab ignores the other tabs' messages (no unhandled rejection)", async () => {
  const ctx = await context();
  const other = await open(ctx, { name: "closing", sub: "cleo" }, ["rooms/cleo"]);
  await other.waitForFunction(() => (window as unknown as { sg: Sg }).sg.state() === "connected");
  const closing = await open(ctx, { name: "closing", sub: "cleo" }, ["rooms/cleo"]);
  const errors: string[] = [];
  closing.on("pageerror", (e) => errors.push(e.message));
  // The tab closes while it handles a message from another tab (the worst moment).
  await closing.evaluate(() => {
    const channel = new BroadcastChannel("syncgate:closing");
    channel.onmessage = (event: MessageEvent<{ t: string }>) => {
      if (event.data.t !== "data") return;
      channel.close();
      void (window as unknown as { sg: { client: { close(): Promise<void> } } }).sg.client.close();
    };
  });
  await other.evaluate(() => (window as unknown as { sg: Sg }).sg.set("rooms/cleo", "k", "while the other tab closes"));
  await other.waitForFunction(() => (window as unknown as { sg: Sg }).sg.pending() === 0);
  await other.evaluate(() => (window as unknown as { sg: Sg }).sg.set("rooms/cleo", "k", "after the close"));
  await other.waitForFunction(() => (window as unknown as { sg: Sg }).sg.pending() === 0);
  await closing.waitForTimeout(300);
  assert.deepEqual(errors, []);
});

test("two browsers see each other present, and one leaving", async () => {
  const [a, b] = [await context(), await context()];
  const pa = await open(a, { name: "p", sub: "ann", presence: "rooms/presence" });
  const pb = await open(b, { name: "p", sub: "ben", presence: "rooms/presence" });
  for (const page of [pa, pb]) {
    await page.waitForFunction(() => JSON.stringify((window as unknown as { sg: Sg }).sg.members().sort()) === '["ann","ben"]', null, { timeout: 10_000 });
  }
  // A second tab of ann's browser shares its connection, and gets the list at once.
  const pa2 = await open(a, { name: "p", sub: "ann", presence: "rooms/presence" });
  await pa2.waitForFunction(() => JSON.stringify((window as unknown as { sg: Sg }).sg.members().sort()) === '["ann","ben"]', null, { timeout: 5000 });
  await pb.close();
  await pa.waitForFunction(() => JSON.stringify((window as unknown as { sg: Sg }).sg.members()) === '["ann"]', null, { timeout: 10_000 });
  await pa2.waitForFunction(() => JSON.stringify((window as unknown as { sg: Sg }).sg.members()) === '["ann"]', null, { timeout: 10_000 });
});

type Rx = {
  counts: { collections: number; topics: number };
  show(p: { name: string; topic: string; tick: number; badge: boolean }): void;
  state(): string;
  client: { publish(topic: string, data: unknown): Promise<void> };
};

test("React hooks follow their arguments, keep their subscriptions across renders, and read the identity late", async () => {
  const seed = client({ url: server.url, getToken: () => token("rita") });
  seed.connect();
  const [ca, cb] = [seed.collection("rooms/ra"), seed.collection("rooms/rb")];
  await Promise.all([ca.set("a1", "in a"), cb.set("b1", "in b")]);
  while (seed.pending > 0) await next(seed, "opSettled");
  const ctx = await context();
  const page = await ctx.newPage();
  const q = new URLSearchParams({ ws: server.url, name: "react", sub: "rita", collection: "rooms/ra", topic: "rooms/ta" });
  await page.goto(`http://127.0.0.1:${site.port}/react?${q}`);
  await page.waitForFunction(() => "rx" in window && (window as unknown as { rx: Rx }).rx.state() === "connected");
  await page.waitForSelector('#entries li:text-is("a1=\\"in a\\"")');
  // Re-renders with the same arguments take no new handle or subscription.
  const before = await page.evaluate(() => ({ ...(window as unknown as { rx: Rx }).rx.counts }));
  for (let tick = 1; tick <= 5; tick++) {
    await page.evaluate((tick) => (window as unknown as { rx: Rx }).rx.show({ name: "rooms/ra", topic: "rooms/ta", tick, badge: false }), tick);
    await page.waitForSelector(`#tick:text-is("${tick}")`);
  }
  assert.deepEqual(await page.evaluate(() => (window as unknown as { rx: Rx }).rx.counts), before, "stable subscribe functions");
  // A message on the first topic, then a switch: the old collection's records and the old topic's messages go.
  await page.evaluate(async () => {
    for (let i = 0; i < 50 && document.querySelectorAll("#messages li").length === 0; i++) {
      await (window as unknown as { rx: Rx }).rx.client.publish("rooms/ta", "on a");
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  await page.waitForSelector('#messages li:text-is("\\"on a\\"")');
  await page.evaluate(() => (window as unknown as { rx: Rx }).rx.show({ name: "rooms/rb", topic: "rooms/tb", tick: 6, badge: true }));
  await page.waitForSelector('#entries li:text-is("b1=\\"in b\\"")');
  assert.deepEqual(await page.locator("#entries li").allTextContents(), ['b1="in b"'], "only the new collection");
  assert.deepEqual(await page.locator("#messages li").allTextContents(), [], "the old topic's messages are gone");
  // A component mounted after the connection came up still knows who is signed in.
  assert.equal(await page.locator("#sub").textContent(), "rita");
  await seed.close();
});
