// Test helpers: the real `syncgate` binary, dev tokens from its `token` command, and a client in Node.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { decode, encode } from "@msgpack/msgpack";
import { SyncgateClient, type SyncgateClientOptions } from "../src/index.js";
import type { ClientEvents } from "../src/types.js";
import type { WebSocketLike } from "../src/connector.js";

export const SECRET = "typescript-test-secret-0123456789abcdef";

/** The binary `cargo test` (or `cargo build`) made, or SYNCGATE_BIN. */
export const BIN = process.env.SYNCGATE_BIN ?? fileURLToPath(new URL("../../../../target/debug/syncgate", import.meta.url));

export interface Server {
  url: string;
  addr: string;
  log: string[];
  stop(): Promise<void>;
}

/** Starts `syncgate serve` on an ephemeral port with an in-memory store. */
export async function startServer(args: string[]): Promise<Server> {
  const child: ChildProcess = spawn(BIN, ["serve", "--listen", "127.0.0.1:0", "--store", "memory", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SYNCGATE_"))),
  });
  const log: string[] = [];
  const lines = createInterface({ input: child.stdout! });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const addr = await new Promise<string>((resolve, reject) => {
    lines.on("line", (line) => {
      log.push(line);
      const m = /\baddr=(\S+)/.exec(line);
      if (m && m[1]) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`syncgate exited (${code}): ${stderr}`)));
  });
  return {
    url: `ws://${addr}/ws`,
    addr,
    log,
    stop: () =>
      new Promise<void>((resolve) => {
        child.on("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

/** A dev HS256 token from `syncgate token`. */
export function token(sub: string, roles: string[] = ["user"], ttl = "1h", secret = SECRET): string {
  const args = ["token", "--secret", secret, "--sub", sub, "--ttl", ttl];
  for (const role of roles) args.push("--role", role);
  const out = spawnSync(BIN, args, { encoding: "utf8" });
  if (out.status !== 0) throw new Error(out.stderr);
  return out.stdout.trim();
}

/** A client in Node (the `ws` WebSocket, memory storage, quick backoff). */
export function client(options: Partial<SyncgateClientOptions> & { url: string }): SyncgateClient {
  return new SyncgateClient({
    storage: "memory",
    WebSocket: WebSocket as unknown as WebSocketLike,
    backoff: { initialMs: 20, maxMs: 200 },
    ...options,
  });
}

/** Waits (10 s at most) for the first event matching `pred`. */
export function next<K extends keyof ClientEvents>(
  c: SyncgateClient,
  event: K,
  pred: (payload: ClientEvents[K]) => boolean = () => true,
  ms = 10_000,
): Promise<ClientEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${String(event)} event within ${ms} ms`));
    }, ms);
    const off = c.on(event, (payload) => {
      if (!pred(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

/** Records every event of the given kinds. */
export function record(c: SyncgateClient, kinds: (keyof ClientEvents)[]): { kind: string; payload: unknown }[] {
  const seen: { kind: string; payload: unknown }[] = [];
  for (const kind of kinds) c.on(kind, (payload) => seen.push({ kind, payload }));
  return seen;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Rules the tests share: each user their own `users/{sub}/**`, `shared/**` read-only, `rooms/**` open. */
export const RULES = `
[[rules]]
roles = ["user"]
resource = "users/{sub}/**"
actions = ["read", "write"]

[[rules]]
roles = ["user"]
resource = "shared/**"
actions = ["read"]

[[rules]]
roles = ["*"]
resource = "rooms/**"
actions = ["read", "write"]
`;

/** RULES written to a fresh file, for `--rules`. */
export function rulesFile(): string {
  const dir = mkdtempSync(join(tmpdir(), "sg-rules-"));
  writeFileSync(join(dir, "rules.toml"), RULES);
  return join(dir, "rules.toml");
}

/**
 * The `ws` WebSocket with a fault injected on the way in: `rewrite` sees every
 * server message (decoded) and returns what the client gets instead. The real
 * server still did what it did; only the client's view of it changes.
 */
export function rewritingWebSocket(rewrite: (message: Record<string, unknown>) => Record<string, unknown>): WebSocketLike {
  class Rewriting extends (WebSocket as unknown as new (url: string) => object) {
    set onmessage(handler: ((event: { data: unknown }) => void) | null) {
      const parent = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage")!;
      parent.set!.call(
        this,
        handler &&
          ((event: { data: unknown }) => {
            const message = decode(new Uint8Array(event.data as ArrayBuffer)) as Record<string, unknown>;
            const bytes = encode(rewrite(message));
            handler({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
          }),
      );
    }
    get onmessage(): unknown {
      return Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage")!.get!.call(this);
    }
  }
  return Rewriting as unknown as WebSocketLike;
}
