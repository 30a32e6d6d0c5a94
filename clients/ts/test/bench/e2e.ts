// End-to-end encryption's cost in Chromium (npm run bench): seal + open of one
// small record through WebCrypto, and the Argon2id derivation an unlock pays
// (hash-wasm, DEFAULT_KDF), on this machine. The server's side is unchanged:
// it only sees larger values (28 bytes of envelope per record).
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { launch } from "../browser/env.js";

const script = readFileSync(fileURLToPath(new URL("../../browser/e2e-page.js", import.meta.url)));
const site = createServer((req, res) => {
  if (req.url === "/e2e-page.js") {
    res.setHeader("content-type", "text/javascript");
    res.end(script);
  } else {
    res.setHeader("content-type", "text/html");
    res.end(`<!doctype html><script type="module" src="/e2e-page.js"></script>`);
  }
});
await new Promise<void>((r) => site.listen(0, "127.0.0.1", r));
const browser = await launch();
const page = await browser.newPage();
await page.goto(`http://127.0.0.1:${(site.address() as AddressInfo).port}/`);
await page.waitForFunction(() => "e2e" in window);
type Bench = (n: number) => Promise<{ perRecordUs: number; argon2Ms: number; kdf: { m: number; t: number; p: number } }>;
const result = await page.evaluate(() => ((window as unknown as { e2e: { bench: Bench } }).e2e.bench)(5000));
console.log(`e2e in Chromium: seal + open ${result.perRecordUs.toFixed(1)} µs per record (5,000 records of ~100 B)`);
console.log(`e2e in Chromium: Argon2id m=${result.kdf.m} KiB t=${result.kdf.t} p=${result.kdf.p}: ${result.argon2Ms.toFixed(0)} ms per unlock`);
await browser.close();
site.close();
