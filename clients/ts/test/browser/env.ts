// The browser tests' world: Debian's Chromium driven by playwright-core, a static
// server on its own port (the page's origin), and a proxy that counts the ops
// the browser sends.
import { readFileSync } from "node:fs";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { type AddressInfo, createServer, type Socket, connect } from "node:net";
import { fileURLToPath } from "node:url";
import { decode } from "@msgpack/msgpack";
import { type Browser, chromium } from "playwright-core";
import { token } from "../harness.js";

export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking"],
  });
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>syncgate test</title>
<p>state: <span id="state"></span> · pending: <span id="pending"></span></p><ul id="records"></ul>
<script type="module" src="/page.js"></script>`;

const REACT_PAGE = `<!doctype html><meta charset="utf-8"><title>syncgate react test</title>
<div id="app"></div><script type="module" src="/react-page.js"></script>`;

/** Serves the test page and a token endpoint; its port is the page's origin. */
export async function staticServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const script = readFileSync(fileURLToPath(new URL("../../browser/page.js", import.meta.url)));
  const reactScript = readFileSync(fileURLToPath(new URL("../../browser/react-page.js", import.meta.url)));
  const server: HttpServer = createHttpServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/page.js" || url.pathname === "/react-page.js") {
      res.setHeader("content-type", "text/javascript");
      res.end(url.pathname === "/page.js" ? script : reactScript);
    } else if (url.pathname === "/react") {
      res.setHeader("content-type", "text/html");
      res.end(REACT_PAGE);
    } else if (url.pathname === "/token") {
      res.setHeader("content-type", "text/plain");
      res.end(token(url.searchParams.get("sub") ?? "alice"));
    } else {
      res.setHeader("content-type", "text/html");
      res.end(PAGE);
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/**
 * A TCP proxy to the server that reads the client's WebSocket frames (after
 * the upgrade) and records the id of every op sent in an OP_BATCH.
 */
export interface Proxy {
  port: number;
  /** Op ids in the order the client sent them. */
  sent: string[];
  /** Cuts every connection and refuses new ones (the server is unreachable). */
  block(): void;
  unblock(): void;
  /** Stops forwarding in both directions without closing anything: a half-open connection. */
  stall(): void;
  unstall(): void;
  close(): void;
}

export async function countingProxy(target: string): Promise<Proxy> {
  const [host, port] = target.split(":") as [string, string];
  const sent: string[] = [];
  const sockets = new Set<Socket>();
  let blocked = false;
  let stalled = false;
  const server = createServer((inbound) => {
    if (blocked) {
      inbound.destroy();
      return;
    }
    const outbound = connect(Number(port), host);
    sockets.add(inbound).add(outbound);
    let upgraded = false;
    let buffer: Buffer = Buffer.alloc(0);
    inbound.on("data", (chunk: Buffer) => {
      if (stalled) return;
      outbound.write(chunk);
      buffer = Buffer.concat([buffer, chunk]);
      if (!upgraded) {
        const end = buffer.indexOf("\r\n\r\n");
        if (end < 0) return;
        upgraded = true;
        buffer = buffer.subarray(end + 4);
      }
      buffer = readFrames(buffer, (payload) => {
        try {
          const message = decode(payload) as { type?: string; ops?: { opId: string }[] };
          if (message.type === "OP_BATCH") for (const op of message.ops ?? []) sent.push(op.opId);
        } catch {
          // Not a whole message (a fragment): not counted; the tests send small ones.
        }
      });
    });
    outbound.on("data", (chunk: Buffer) => {
      if (!stalled) inbound.write(chunk);
    });
    const end = () => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on("close", end).on("error", end);
    outbound.on("close", end).on("error", end);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const cut = () => {
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  return {
    port: (server.address() as AddressInfo).port,
    sent,
    block: () => {
      blocked = true;
      cut();
    },
    unblock: () => (blocked = false),
    stall: () => (stalled = true),
    unstall: () => {
      stalled = false;
      cut();
    },
    close: () => {
      server.close();
      cut();
    },
  };
}

/** Parses masked client frames from `buffer`, calling `onMessage` for each binary one; returns the rest. */
function readFrames(buffer: Buffer, onMessage: (payload: Uint8Array) => void): Buffer {
  for (;;) {
    if (buffer.length < 2) return buffer;
    const opcode = (buffer[0] as number) & 0x0f;
    let length = (buffer[1] as number) & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (buffer.length < 4) return buffer;
      length = buffer.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (buffer.length < 10) return buffer;
      length = Number(buffer.readBigUInt64BE(2));
      offset = 10;
    }
    const masked = ((buffer[1] as number) & 0x80) !== 0;
    const mask = masked ? buffer.subarray(offset, offset + 4) : null;
    offset += masked ? 4 : 0;
    if (buffer.length < offset + length) return buffer;
    const payload = Buffer.from(buffer.subarray(offset, offset + length));
    if (mask) for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (mask[i % 4] as number);
    if (opcode === 2) onMessage(payload);
    buffer = buffer.subarray(offset + length);
  }
}
