// End-to-end encryption in a real Chromium against the real binary: enrol with
// a password (the vault at /vault/{sub}), reload, unlock, read; a second
// browser context imports the key by its recovery secret. IndexedDB never
// holds the plaintext: every stored byte is searched for a marker.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import { SECRET, startServer, token, type Server } from "../harness.js";
import { launch } from "./env.js";

const MARKER = "PLAINTEXT-MARKER-b41d";
let browser: Browser;
let server: Server;
let site: HttpServer;
let origin: string;

/** The app's origin: the page, a token endpoint, and /vault forwarded to syncgate (no CORS needed). */
async function appSite(target: string): Promise<HttpServer> {
  const script = readFileSync(fileURLToPath(new URL("../../browser/e2e-page.js", import.meta.url)));
  const http = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname.startsWith("/vault/")) {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const init: RequestInit = { method: req.method ?? "GET", headers: { authorization: req.headers.authorization ?? "", "content-type": "application/json" } };
      if (chunks.length > 0) init.body = Buffer.concat(chunks);
      const answer = await fetch(`http://${target}${url.pathname}`, init);
      res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
      res.end(Buffer.from(await answer.arrayBuffer()));
    } else if (url.pathname === "/e2e-page.js") {
      res.setHeader("content-type", "text/javascript");
      res.end(script);
    } else if (url.pathname === "/token") {
      res.setHeader("content-type", "text/plain");
      res.end(token(url.searchParams.get("sub") ?? "alice"));
    } else {
      res.setHeader("content-type", "text/html");
      res.end(`<!doctype html><meta charset="utf-8"><title>e2e</title><script type="module" src="/e2e-page.js"></script>`);
    }
  });
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  return http;
}

before(async () => {
  server = await startServer(["--jwt-secret", SECRET, "--rules", rules(), "--auth-failures-per-minute", "1000"]);
  site = await appSite(server.addr);
  origin = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await new Promise((r) => site?.close(r));
});

function rules(): string {
  const dir = mkdtempSync(join(tmpdir(), "sg-e2e-browser-"));
  writeFileSync(
    join(dir, "rules.toml"),
    ["users/{sub}/**", "vault/{sub}/**"].map((r) => `[[rules]]\nroles = ["user"]\nresource = "${r}"\nactions = ["read", "write"]\n`).join("\n"),
  );
  return join(dir, "rules.toml");
}

async function open(page: Page, sub: string): Promise<void> {
  await page.goto(`${origin}/?${new URLSearchParams({ ws: server.url, sub })}`);
  await page.waitForFunction(() => "e2e" in window);
}

type E2e = {
  enrol(p: string): Promise<string>;
  unlock(p: string): Promise<void>;
  importSecret(s: string): Promise<void>;
  exportSecret(): Promise<string>;
  connect(): void;
  ready(): Promise<void>;
  set(c: string, k: string, v: unknown): Promise<string>;
  entries(c: string): [string, unknown][];
  pending(): number;
  unreadable(): unknown[];
  idbText(): Promise<string>;
};
/** The page's `e2e` handle, called from Node (each call is one `page.evaluate`). */
const e2e = (page: Page) => {
  const run = <T>(fn: (e: E2e, arg: string) => T | Promise<T>, arg = ""): Promise<T> =>
    page.evaluate(
      ([source, a]) => new Function("e", "a", `return (${source})(e, a)`)((window as unknown as { e2e: E2e }).e2e, a) as T,
      [fn.toString(), arg] as const,
    );
  return {
    enrol: (password: string) => run((e, p) => e.enrol(p), password),
    unlock: (password: string) => run((e, p) => e.unlock(p), password),
    importSecret: (typed: string) => run((e, s) => e.importSecret(s), typed),
    exportSecret: () => run((e) => e.exportSecret()),
    connect: () => run((e) => e.connect()),
    ready: () => run((e) => e.ready()),
    set: (key: string, text: string) => run((e, a) => e.set("users/erin/notes", a.split("|")[0]!, { text: a.split("|")[1] }), `${key}|${text}`),
    entries: () => run((e) => e.entries("users/erin/notes")),
    unreadable: () => run((e) => e.unreadable()),
    idbText: () => run((e) => e.idbText()),
    until: (count: number) =>
      page.waitForFunction((n) => (window as unknown as { e2e: E2e }).e2e.entries("users/erin/notes").length === n, count),
    settled: () => page.waitForFunction(() => (window as unknown as { e2e: E2e }).e2e.pending() === 0),
  };
};

const NOTES = "users/erin/notes";

test("enrol with a password, reload, unlock, read; a second context imports the recovery secret; IndexedDB holds no plaintext", async () => {
  const first = await browser.newContext();
  const page = await first.newPage();
  await open(page, "erin");
  const a = e2e(page);
  const recoveryCode = await a.enrol("correct horse");
  assert.match(recoveryCode, /^[0-9A-Z]{4}(-[0-9A-Z]{1,4})+$/);
  // Written before connecting: the outbox in IndexedDB holds it.
  await a.set("n1", `${MARKER} one`);
  const queued = await a.idbText();
  assert.ok(queued.includes("n1") && queued.includes(NOTES), "the search sees the stored op");
  assert.equal(queued.includes(MARKER), false, "no plaintext in the IndexedDB outbox");
  await a.connect();
  await a.settled();

  // Reload: the vault is unlocked again with the password; the stored replica reads as plaintext.
  await page.reload();
  await page.waitForFunction(() => "e2e" in window);
  await a.unlock("correct horse");
  await a.ready();
  await a.until(1);
  assert.deepEqual(await a.entries(), [["n1", { text: `${MARKER} one` }]]);
  await a.connect();
  const typed = await a.exportSecret();

  // A second context (its own IndexedDB): the key arrives typed in, as a recovery secret.
  const second = await browser.newContext();
  const otherPage = await second.newPage();
  await open(otherPage, "erin");
  const b = e2e(otherPage);
  await b.importSecret(typed);
  await b.connect();
  await b.until(1);
  assert.deepEqual(await b.entries(), [["n1", { text: `${MARKER} one` }]]);
  await b.set("n2", `${MARKER} two`);
  await a.until(2);
  assert.deepEqual(await a.entries(), await b.entries());

  for (const device of [a, b]) {
    await device.settled();
    const stored = await device.idbText();
    assert.ok(stored.includes("n2"), "the replica holds both records");
    assert.equal(stored.includes(MARKER), false, "no plaintext in IndexedDB");
    assert.deepEqual(await device.unreadable(), []);
  }
  await first.close();
  await second.close();
});
