// The client in a real Chromium (Debian's, driven by playwright-core), against the
// real binary, with the page served from another origin (another port) than the server.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { SECRET, client, next, rulesFile, startServer, token, type Server } from "../harness.js";
import { countingProxy, launch, staticServer } from "./env.js";

let browser: Browser;
let site: { port: number; close: () => Promise<void> };
let server: Server;
const cleanups: (() => Promise<void> | void)[] = [];

before(async () => {
  site = await staticServer();
  server = await startServer([
    "--jwt-secret",
    SECRET,
    "--rules",
    rulesFile(),
    "--auth-cookie",
    "sg_token",
    "--allowed-origins",
    `http://127.0.0.1:${site.port}`,
  ]);
  browser = await launch();
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await browser?.close();
  await server?.stop();
  await site?.close();
});

interface PageOptions {
  ws?: string;
  name?: string;
  sub?: string;
  collections: string[];
  mode?: "token" | "cookie";
  host?: string;
}

async function open(context: BrowserContext, o: PageOptions): Promise<Page> {
  const page = await context.newPage();
  const q = new URLSearchParams({ ws: o.ws ?? server.url, name: o.name ?? "app", sub: o.sub ?? "alice" });
  if (o.mode) q.set("mode", o.mode);
  for (const c of o.collections) q.append("collection", c);
  await page.goto(`http://${o.host ?? "127.0.0.1"}:${site.port}/?${q}`);
  await page.waitForFunction(() => "sg" in window);
  return page;
}

type Sg = {
  set(c: string, k: string, v: unknown): Promise<string>;
  entries(c: string): [string, unknown][];
  state(): string;
  pending(): number;
  events: { kind: string; payload: Record<string, unknown> }[];
};
const sg = (page: Page) => ({
  set: (c: string, k: string, v: unknown) =>
    page.evaluate(([c, k, v]) => (window as unknown as { sg: Sg }).sg.set(c as string, k as string, v), [c, k, v]),
  entries: (c: string) => page.evaluate((c) => (window as unknown as { sg: Sg }).sg.entries(c), c),
  connected: () => page.waitForFunction(() => (window as unknown as { sg: Sg }).sg.state() === "connected"),
  settled: () => page.waitForFunction(() => (window as unknown as { sg: Sg }).sg.pending() === 0),
  events: () => page.evaluate(() => (window as unknown as { sg: Sg }).sg.events),
});

/** What a Node client sees of a collection on the server. */
async function serverView(collection: string, sub: string): Promise<[string, unknown][]> {
  const c = client({ url: server.url, getToken: () => token(sub) });
  const col = c.collection(collection);
  c.connect();
  await next(c, "synced", (e) => e.collection === collection);
  const entries = col.entries();
  await c.close();
  return entries;
}

test("(a) signs in with a getToken endpoint and syncs", async () => {
  const context = await browser.newContext();
  cleanups.push(() => context.close());
  const page = await open(context, { collections: ["users/alice/todos"] });
  await sg(page).connected();
  await sg(page).set("users/alice/todos", "t1", { title: "from the browser" });
  await sg(page).settled();
  assert.deepEqual(await serverView("users/alice/todos", "alice"), [["t1", { title: "from the browser" }]]);
  // And what another client writes shows up on the page.
  const other = client({ url: server.url, getToken: () => token("alice") });
  other.connect();
  await other.collection("users/alice/todos").set("t2", "from node");
  await page.waitForSelector("text=users/alice/todos/t2=\"from node\"");
  await other.close();
});

test("(b) offline writes survive a reload and reach a second browser", async () => {
  // The server is reached through a proxy the test can cut, so it stays unreachable
  // while the browser is back online to reload the page.
  const proxy = await countingProxy(server.addr);
  cleanups.push(() => proxy.close());
  const context = await browser.newContext();
  cleanups.push(() => context.close());
  const options = { ws: `ws://127.0.0.1:${proxy.port}/ws`, name: "offline", sub: "olga", collections: ["users/olga/notes"] };
  let page = await open(context, options);
  await sg(page).connected();
  await context.setOffline(true);
  proxy.block();
  await page.waitForFunction(() => (window as unknown as { sg: Sg }).sg.state() !== "connected");
  await sg(page).set("users/olga/notes", "n1", "written offline");
  await sg(page).set("users/olga/notes", "n2", "also offline");
  await context.setOffline(false);
  await page.reload();
  await page.waitForFunction(() => "sg" in window);
  await page.waitForSelector('text=users/olga/notes/n2="also offline"');
  assert.deepEqual((await sg(page).entries("users/olga/notes")).map(([k]) => k), ["n1", "n2"], "shown after a reload");
  assert.notEqual(await page.evaluate(() => (window as unknown as { sg: Sg }).sg.state()), "connected");
  assert.equal(proxy.sent.length, 0, "nothing reached the server while it was unreachable");
  proxy.unblock();
  await sg(page).settled();
  const second = await browser.newContext();
  cleanups.push(() => second.close());
  page = await open(second, { ...options, ws: server.url });
  await page.waitForSelector('text=users/olga/notes/n2="also offline"');
  assert.deepEqual((await sg(page).entries("users/olga/notes")).map(([k]) => k), ["n1", "n2"]);
});

test("(c) a write the token may not make is rolled back on screen", async () => {
  const context = await browser.newContext();
  cleanups.push(() => context.close());
  const page = await open(context, { name: "refused", collections: ["shared/board"] });
  await sg(page).connected();
  await page.waitForFunction(() => (window as unknown as { sg: Sg }).sg.events.some((e) => e.kind === "synced"));
  const opId = await sg(page).set("shared/board", "title", "vandalised");
  await page.waitForFunction(
    (opId) => (window as unknown as { sg: Sg }).sg.events.some((e) => e.kind === "opSettled" && e.payload.opId === opId),
    opId,
  );
  const settled = (await sg(page).events()).find((e) => e.kind === "opSettled" && e.payload.opId === opId);
  assert.deepEqual([settled?.payload.ok, settled?.payload.code], [false, "forbidden"]);
  assert.equal(await page.locator("text=vandalised").count(), 0, "gone from the screen");
});

test("(d) two tabs converge and nothing is sent twice", async () => {
  const proxy = await countingProxy(server.addr);
  cleanups.push(() => proxy.close());
  const context = await browser.newContext();
  cleanups.push(() => context.close());
  const ws = `ws://127.0.0.1:${proxy.port}/ws`;
  const options = { ws, name: "tabs", sub: "tess", collections: ["users/tess/list"] };
  const first = await open(context, options);
  const second = await open(context, options);
  await sg(first).connected();
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    ids.push(await sg(first).set("users/tess/list", `a${i}`, i));
    ids.push(await sg(second).set("users/tess/list", `b${i}`, i));
  }
  await sg(first).settled();
  await sg(second).settled();
  const expected = [...Array(5).keys()].flatMap((i) => [[`a${i}`, i], [`b${i}`, i]]).sort();
  await first.waitForFunction((n) => (window as unknown as { sg: Sg }).sg.entries("users/tess/list").length === n, 10);
  await second.waitForFunction((n) => (window as unknown as { sg: Sg }).sg.entries("users/tess/list").length === n, 10);
  assert.deepEqual((await sg(first).entries("users/tess/list")).sort(), expected);
  assert.deepEqual((await sg(second).entries("users/tess/list")).sort(), expected, "both tabs show the same state");
  assert.deepEqual([...proxy.sent].sort(), [...ids].sort(), "every write sent exactly once, by one tab");
  assert.deepEqual((await serverView("users/tess/list", "tess")).sort(), expected);
});

test("(e) cookie auth works from the allowed Origin and gets 403 from another", async () => {
  const context = await browser.newContext();
  cleanups.push(() => context.close());
  await context.addCookies([{ name: "sg_token", value: token("cora"), domain: "127.0.0.1", path: "/" }]);
  const page = await open(context, { name: "cookie", mode: "cookie", collections: ["users/cora/x"] });
  await sg(page).connected();
  const connected = (await sg(page).events()).find((e) => e.kind === "connected");
  assert.equal(connected?.payload.sub, "cora", "authenticated by the cookie alone");
  const other = await browser.newContext();
  cleanups.push(() => other.close());
  await other.addCookies([{ name: "sg_token", value: token("cora"), domain: "127.0.0.1", path: "/" }]);
  const failures: string[] = [];
  const page2 = await other.newPage();
  page2.on("websocket", (ws) => ws.on("socketerror", (error) => failures.push(error)));
  const q = new URLSearchParams({ ws: server.url, name: "cookie", mode: "cookie" });
  await page2.goto(`http://localhost:${site.port}/?${q}`);
  for (let i = 0; i < 50 && failures.length === 0; i++) await page2.waitForTimeout(100);
  assert.ok(failures.some((f) => f.includes("403")), `the upgrade from another Origin is refused: ${failures.join("; ")}`);
  const state = await page2.evaluate(() => (window as unknown as { sg: Sg }).sg.state());
  assert.notEqual(state, "connected");
});
