// The todo-web demo (examples/todo-web/app.jsx, bundled as its dev server does, with
// this package's React) in Chromium, against the real binary behind a proxy the
// test can cut. Every assertion reads what the page shows.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { build } from "esbuild";
import type { Browser, Page } from "playwright-core";
import { SECRET, client, next, startServer, token, type Server } from "../harness.js";
import { countingProxy, launch, type Proxy } from "./env.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const demo = fileURLToPath(new URL("../../../../../examples/todo-web/", import.meta.url));

let browser: Browser;
let server: Server;
let proxy: Proxy;
let site: { port: number; close: () => Promise<void> };

async function demoSite(syncgateUrl: string): Promise<{ port: number; close: () => Promise<void> }> {
  const bundle = await build({
    entryPoints: [`${demo}app.jsx`],
    bundle: true,
    format: "esm",
    jsx: "automatic",
    write: false,
    alias: {
      "@syncgate/client/react": `${root}src/react.ts`,
      "@syncgate/client": `${root}src/index.ts`,
    },
    nodePaths: [`${root}node_modules`],
    logLevel: "warning",
  });
  const app = bundle.outputFiles[0]!.contents;
  const html = readFileSync(`${demo}index.html`, "utf8").replace("</head>", `<script>window.SYNCGATE_URL = ${JSON.stringify(syncgateUrl)};</script></head>`);
  const http = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/app.js") {
      res.setHeader("content-type", "text/javascript");
      res.end(app);
    } else if (url.pathname === "/token") {
      res.setHeader("content-type", "text/plain");
      res.end(token(url.searchParams.get("user") ?? "alice"));
    } else {
      res.setHeader("content-type", "text/html");
      res.end(html);
    }
  });
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  return { port: (http.address() as AddressInfo).port, close: () => new Promise((r) => http.close(() => r())) };
}

before(async () => {
  const rules = readFileSync(`${demo}rules.toml`, "utf8");
  const { mkdtempSync, writeFileSync } = await import("node:fs");
  const dir = mkdtempSync("/tmp/sg-demo-");
  writeFileSync(`${dir}/rules.toml`, rules);
  server = await startServer(["--jwt-secret", SECRET, "--rules", `${dir}/rules.toml`]);
  proxy = await countingProxy(server.addr);
  site = await demoSite(`ws://127.0.0.1:${proxy.port}/ws`);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  proxy?.close();
  await site?.close();
  await server?.stop();
});

const badge = (page: Page) => page.locator("header .badge").first();
const titles = (page: Page) => page.locator("ul li span").allTextContents();
async function add(page: Page, title: string): Promise<void> {
  await page.fill('input[type="text"]', title);
  await page.click("form button");
  await page.waitForSelector(`li span:text-is("${title}")`);
}
async function shows(page: Page, expected: string[]): Promise<void> {
  await page.waitForFunction(
    (expected) => {
      const shown = Array.from(document.querySelectorAll("ul li span")).map((e) => e.textContent ?? "").sort();
      return JSON.stringify(shown) === JSON.stringify([...expected].sort());
    },
    expected,
    { timeout: 10_000 },
  ).catch(async () => assert.deepEqual((await titles(page)).sort(), [...expected].sort()));
}

test("the demo: a second tab, offline writes in either tab, and reloads show what is stored", async () => {
  const context = await browser.newContext();
  const url = `http://127.0.0.1:${site.port}/?user=dora`;
  const first = await context.newPage();
  await first.goto(url);
  await first.waitForSelector(".badge.online");
  await add(first, "buy milk");
  await first.waitForSelector('.badge:text-is("0 pending")');

  // A second tab of the same user: the list, and the leader's connection state.
  const second = await context.newPage();
  await second.goto(url);
  await shows(second, ["buy milk"]);
  await second.waitForSelector(".badge.online", { timeout: 5000 });

  // Offline: a write in the leading tab reaches the other tab, and back.
  proxy.block();
  await context.setOffline(true);
  await first.waitForSelector(".badge.offline, .badge:text-is('connecting…')");
  await add(first, "written offline in the first tab");
  await shows(second, ["buy milk", "written offline in the first tab"]);
  await add(second, "written offline in the second tab");
  await shows(first, ["buy milk", "written offline in the first tab", "written offline in the second tab"]);

  // A reload while the server is unreachable shows what IndexedDB holds.
  await context.setOffline(false);
  await first.reload();
  await shows(first, ["buy milk", "written offline in the first tab", "written offline in the second tab"]);
  assert.notEqual(await badge(first).textContent(), "online");
  await first.waitForSelector('.badge:text-is("2 pending")');

  // Online again: everything reaches the server, and a reload online still shows it all.
  proxy.unblock();
  await first.waitForSelector(".badge.online", { timeout: 15_000 });
  await first.waitForSelector('.badge:text-is("0 pending")', { timeout: 15_000 });
  await second.reload();
  await shows(second, ["buy milk", "written offline in the first tab", "written offline in the second tab"]);
  await second.waitForSelector(".badge.online", { timeout: 5000 });
  const check = client({ url: server.url, getToken: () => token("dora") });
  const todos = check.collection("todos/dora");
  check.connect();
  await next(check, "synced");
  assert.equal(todos.entries().length, 3);
  await check.close();
  await context.close();
});
