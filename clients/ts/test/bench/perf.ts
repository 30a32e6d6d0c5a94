// Client performance in Chromium against a local release or debug server:
// applying a 10,000-record snapshot, and replaying a 1,000-op outbox.
// Run: npm run bench (after `cargo build --release`; SYNCGATE_BIN picks the binary).
import { cpus } from "node:os";
import type { Page } from "playwright-core";
import { countingProxy, launch, staticServer } from "../browser/env.js";
import { SECRET, client, next, startServer, token } from "../harness.js";

type Sg = {
  firstRender(): { t: number; records: number } | null;
  set(c: string, k: string, v: unknown): Promise<string>;
  pending(): number;
  events: { kind: string; payload: Record<string, unknown>; t: number }[];
  startedAt: number;
};
/** Heap bytes per open collection handle (Node, with --expose-gc): on one collection, and on distinct ones (each also tracked for its sync). */
function memoryPerHandle(): string {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return "memory per handle: run node with --expose-gc";
  const c = client({ url: "ws://127.0.0.1:1/ws" });
  const measure = (open: (i: number) => { close(): void }): number => {
    gc();
    const start = process.memoryUsage().heapUsed;
    const handles = Array.from({ length: 10_000 }, (_, i) => open(i));
    gc();
    const used = (process.memoryUsage().heapUsed - start) / handles.length;
    for (const h of handles) h.close();
    return used;
  };
  const same = measure(() => c.collection("bench/one"));
  const distinct = measure((i) => c.collection(`bench/c${i}`));
  void c.close();
  return `memory per open collection handle: ${same.toFixed(0)} bytes (on one collection), ${distinct.toFixed(0)} bytes (each on its own collection)`;
}

const sg = (page: Page) => page.evaluate(() => (window as unknown as { sg: Sg }).sg);

const server = await startServer(["--jwt-secret", SECRET, "--max-frame-bytes", "16777216"]);
const site = await staticServer();
const proxy = await countingProxy(server.addr);
const browser = await launch();
try {
  // Seed 10,000 records (about 60 bytes of value each) through a Node client.
  const seeder = client({ url: server.url, getToken: () => token("bench"), replayBatch: 1000 });
  const big = seeder.collection("bench/big");
  seeder.connect();
  for (let i = 0; i < 10_000; i++) await big.set(`k${String(i).padStart(5, "0")}`, { title: `record ${i}`, done: i % 2 === 0 });
  while (seeder.pending > 0) await next(seeder, "opSettled");
  await seeder.close();

  const context = await browser.newContext();
  const page = await context.newPage();
  const q = new URLSearchParams({ ws: `ws://127.0.0.1:${proxy.port}/ws`, name: "bench", sub: "bench", render: "0" });
  q.append("collection", "bench/big");
  await page.goto(`http://127.0.0.1:${site.port}/?${q}`);
  await page.waitForFunction(() => (window as unknown as { sg: Sg }).sg?.events.some((e) => e.kind === "synced"), null, { timeout: 120_000 });
  const s = await sg(page);
  const connected = s.events.find((e) => e.kind === "connected")!;
  const synced = s.events.find((e) => e.kind === "synced")!;
  console.log(
    `snapshot of ${synced.payload.records} records: ${(synced.t - connected.t).toFixed(0)} ms from AUTH_ACK to synced ` +
      `(decode, merge, IndexedDB), ${(synced.t - s.startedAt).toFixed(0)} ms from page start`,
  );

  proxy.block();
  await page.waitForFunction(() => (window as unknown as { sg: Sg }).sg.events.some((e) => e.kind === "disconnected"));
  const written = await page.evaluate(async () => {
    const start = performance.now();
    for (let i = 0; i < 1000; i++) await (window as unknown as { sg: Sg }).sg.set("bench/outbox", `o${i}`, { n: i });
    return performance.now() - start;
  });
  console.log(`1,000 offline writes, each durable in IndexedDB before it resolves: ${written.toFixed(0)} ms`);
  const before = Date.now();
  proxy.unblock();
  await page.waitForFunction(() => (window as unknown as { sg: Sg }).sg.pending() === 0, null, { timeout: 120_000, polling: 10 });
  const elapsed = Date.now() - before;
  console.log(`replay of a 1,000-op outbox: ${elapsed} ms including the reconnect (${Math.round(1000 / (elapsed / 1000))} ops/s)`);
  proxy.block();
  // A reload with the server unreachable: from navigation to the first render of the stored records.
  const reloadTimes: number[] = [];
  for (let i = 0; i < 3; i++) {
    await page.reload();
    await page.waitForFunction(() => (window as unknown as { sg: Sg }).sg?.firstRender() !== null, null, { timeout: 60_000 });
    const first = await page.evaluate(() => (window as unknown as { sg: Sg }).sg.firstRender()!);
    reloadTimes.push(first.t);
    if (first.records < 10_000) throw new Error(`only ${first.records} records rendered after the reload`);
  }
  reloadTimes.sort((a, b) => a - b);
  console.log(`reload to the first render of 10,000 stored records (IndexedDB, offline): median ${reloadTimes[1]!.toFixed(0)} ms of 3`);
  proxy.unblock();
  await context.close();

  console.log(memoryPerHandle());
  console.log(`machine: ${cpus().length} cores, ${cpus()[0]?.model ?? "?"}; server ${process.env.SYNCGATE_BIN ?? "target/debug/syncgate"}`);
} finally {
  await browser.close();
  proxy.close();
  await site.close();
  await server.stop();
}
