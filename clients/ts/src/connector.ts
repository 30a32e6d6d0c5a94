/**
 * The leader tab's connection: open, authenticate, refresh in band, resume
 * subscriptions and syncs, replay the outbox, and reconnect by the close-code
 * table. The client (`client.ts`) owns the replica and storage; this class
 * only speaks the protocol and reports through `Host`.
 */
import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { decodeServerMessage, encodeMessage, encodeValue } from "./codec.js";
import { closeAction, isTemporaryError } from "./codes.js";
import { Pacer } from "./pacer.js";
import type { Replica, Settled } from "./replica.js";
import type {
  ClientEvents,
  ClientMessage,
  ConnectionState,
  ServerMessage,
  SessionLimits,
  TokenReason,
  Value,
  WireOp,
  WireRecord,
} from "./types.js";

/** Limits assumed of a server that announces none. */
const DEFAULT_LIMITS: SessionLimits = { maxMessageBytes: 1024 * 1024, maxValueBytes: 256 * 1024, maxBatchOps: 1000 };
/** Room in a batch for the OP_BATCH map around its ops. */
const BATCH_OVERHEAD = 64;

/** A WebSocket constructor: the browser's, or `ws` in Node. */
export type WebSocketLike = new (url: string) => {
  binaryType: string;
  readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
};

export interface ConnectorOptions {
  url: string;
  getToken: ((reason: TokenReason) => Promise<string | null> | string | null) | undefined;
  tokenIn: "message" | "query";
  WebSocket: WebSocketLike;
  backoff: BackoffOptions;
  replayBatch: number;
}

/** What the connector needs from the client. */
export interface Host {
  readonly replica: Replica;
  syncs(): Iterable<string>;
  topics(): Iterable<string>;
  setState(state: ConnectionState): void;
  emit<K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]): void;
  deliver(topic: string, data: Value, from: string): void;
  /** Merges server records (and a cursor) into the replica and storage. */
  merged(collection: string, records: WireRecord[], cursor: string, reset: boolean): Promise<void>;
  /** Persists settled ops (and reports them). */
  settled(settled: Settled[], retrying: { opId: string; code: string }[]): Promise<void>;
  syncRefused(collection: string, code: string, message: string): void;
}

type End = { code: number | null; reason: string; connected: boolean; noToken?: boolean };

/** `full`: a SYNC sent without a cursor, answered with the whole state. */
type Internal = { kind: "sub"; topic: string } | { kind: "sync"; collection: string; full: boolean } | { kind: "replay" };

interface Pending {
  resolve: (message: ServerMessage) => void;
  reject: (error: Error) => void;
}

/** The state of one socket. */
class Link {
  nextId = 1;
  connected = false;
  limits = DEFAULT_LIMITS;
  readonly internal = new Map<number, Internal>();
  readonly requests = new Map<number, Pending>();
  readonly topics = new Set<string>();
  readonly syncs = new Set<string>();
  readonly paging = new Map<string, { records: number; reset: boolean }>();
  replaying = false;
  authFail = "";
  /** Messages are handled one after another, in order, even when handling awaits storage. */
  queue: Promise<unknown> = Promise.resolve();
  /** Every frame leaves through it, within the rate the server announced. */
  readonly pacer: Pacer;
  constructor(readonly socket: InstanceType<WebSocketLike>) {
    this.pacer = new Pacer((frame) => {
      try {
        socket.send(frame);
      } catch {
        socket.close();
      }
    });
  }
}

export class Connector {
  private link: Link | null = null;
  private stopped = false;
  private wakeSleep: (() => void) | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private retryFailures = 0;
  /** Closes with 4029 in a row: each one backs off longer. */
  private rateLimitedCloses = 0;
  private readonly queued: { message: { type: "PUB"; id: number; topic: string; data: Value }; pending: Pending }[] =
    [];
  private readonly onOnline = () => this.wakeSleep?.();
  private readonly onOffline = () => this.link?.socket.close(1000, "offline");

  constructor(
    private readonly host: Host,
    private readonly options: ConnectorOptions,
  ) {}

  start(): void {
    globalThis.addEventListener?.("online", this.onOnline);
    globalThis.addEventListener?.("offline", this.onOffline);
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.removeEventListener?.("offline", this.onOffline);
    this.clearTimers();
    this.link?.socket.close(1000, "closed by the app");
    this.wakeSleep?.();
    for (const { pending } of this.queued.splice(0)) pending.reject(new Error("the client is closed"));
  }

  /** New local writes, subscriptions or syncs: bring the connection in line. */
  wake(): void {
    if (this.link?.connected) this.resume(this.link);
  }

  /** Publishes (queued while disconnected); resolves on OK, rejects on ERROR. */
  publish(topic: string, data: Value): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const pending: Pending = {
        resolve: (answer) => {
          if (answer.type === "OK") resolve();
          else reject(Object.assign(new Error(answer.type === "ERROR" ? answer.message : "unexpected answer"), { code: answer.type === "ERROR" ? answer.code : "internal" }));
        },
        reject,
      };
      const message = { type: "PUB" as const, id: 0, topic, data };
      if (this.link?.connected) this.request(this.link, message, pending);
      else if (this.queued.length >= 1000) reject(new Error("too many publications queued while offline"));
      else this.queued.push({ message, pending });
    });
  }

  private async run(): Promise<void> {
    let attempt = 0;
    let reason: TokenReason = "connect";
    while (!this.stopped) {
      this.host.setState("connecting");
      this.host.emit("connecting", { attempt });
      const end = await this.connectOnce(reason);
      this.clearTimers();
      if (this.stopped) return;
      if (end.noToken) {
        this.halt(null, end.reason);
        return;
      }
      this.host.setState("disconnected");
      this.host.emit("disconnected", { code: end.code, reason: end.reason });
      if (end.connected) attempt = 0;
      if (end.code !== 4029) this.rateLimitedCloses = 0;
      switch (closeAction(end.code)) {
        case "stop":
          this.halt(end.code, end.reason);
          return;
        case "newToken":
          reason = "rejected";
          break;
        case "refreshToken":
          reason = "refresh";
          break;
        case "backOff":
          attempt = Math.max(attempt, 4 + this.rateLimitedCloses++);
          reason = "connect";
          break;
        default:
          reason = "connect";
      }
      await this.sleep(backoffDelay(this.options.backoff, attempt++));
    }
  }

  private halt(code: number | null, reason: string): void {
    this.stopped = true;
    this.host.setState("stopped");
    this.host.emit("stopped", { code, reason });
    for (const { pending } of this.queued.splice(0)) pending.reject(new Error(`the client stopped: ${reason}`));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeSleep = done;
    });
  }

  private async token(reason: TokenReason): Promise<string | null> {
    if (!this.options.getToken) return null;
    return (await this.options.getToken(reason)) ?? null;
  }

  private async connectOnce(reason: TokenReason): Promise<End> {
    let url = this.options.url;
    if (this.options.tokenIn === "query" && this.options.getToken) {
      let token: string | null;
      try {
        token = await this.token(reason);
      } catch (e) {
        return { code: null, reason: `getToken failed: ${String(e)}`, connected: false };
      }
      if (token === null) return { code: null, reason: "getToken returned no token", connected: false, noToken: true };
      url += `${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
    }
    return new Promise<End>((resolve) => {
      let socket: InstanceType<WebSocketLike>;
      try {
        socket = new this.options.WebSocket(url);
      } catch (e) {
        resolve({ code: null, reason: String(e), connected: false });
        return;
      }
      socket.binaryType = "arraybuffer";
      const link = new Link(socket);
      this.link = link;
      let noToken = false;
      let why = reason;
      socket.onmessage = (event) => {
        // A value that cannot be read is set aside and reported; the connection stays.
        const decoded = decodeServerMessage(new Uint8Array(event.data as ArrayBuffer));
        for (const unreadable of decoded.unreadable) this.host.emit("unreadable", unreadable);
        const message = decoded.message;
        if (message === null) return;
        link.queue = link.queue
          .then(() =>
            this.handle(link, message, why, () => {
              noToken = true;
            }),
          )
          .then((next) => {
            if (next) why = next;
          })
          .catch((e: unknown) => this.host.emit("error", { message: `handling ${message.type}: ${String(e)}` }));
      };
      socket.onclose = (event) => {
        link.pacer.clear();
        if (this.link === link) this.link = null;
        for (const pending of link.requests.values()) pending.reject(new Error("disconnected before the answer"));
        const code = event.code === 1005 || event.code === 1006 ? null : event.code;
        const reasonText = [event.reason, link.authFail].filter(Boolean).join(": ") || "connection closed";
        resolve({ code, reason: reasonText, connected: link.connected, noToken });
      };
      socket.onerror = () => undefined;
    });
  }

  private send(link: Link, message: ClientMessage): void {
    link.pacer.send(encodeMessage(message));
  }

  private request(link: Link, message: { type: "PUB"; id: number; topic: string; data: Value }, pending: Pending): void {
    const id = link.nextId++;
    link.requests.set(id, pending);
    this.send(link, { ...message, id });
  }

  /** Handles one message; returns the token reason for the next AUTH when it changes. */
  private async handle(link: Link, message: ServerMessage, why: TokenReason, noToken: () => void): Promise<TokenReason | void> {
    switch (message.type) {
      case "AUTH_REQUIRED": {
        let token: string | null;
        try {
          token = await this.token(why);
        } catch (e) {
          this.host.emit("error", { message: `getToken failed: ${String(e)}` });
          link.socket.close(1000, "no token");
          return;
        }
        if (token === null) {
          noToken();
          link.socket.close(1000, "signed out");
          return;
        }
        this.send(link, { type: "AUTH", token });
        return;
      }
      case "AUTH_ACK": {
        if (message.limits) {
          link.limits = message.limits;
          link.pacer.setLimits(message.limits.messagesPerSecond, message.limits.messageBurst);
        }
        this.scheduleRefresh(link, message.expiresAt);
        if (link.connected) return;
        link.connected = true;
        this.retryFailures = 0;
        this.host.setState("connected");
        this.host.emit("connected", { sub: message.sub, roles: message.roles, expiresAt: message.expiresAt });
        for (const { message: queued, pending } of this.queued.splice(0)) this.request(link, queued, pending);
        this.resume(link);
        return "refresh";
      }
      case "AUTH_FAIL":
        link.authFail = `${message.code}: ${message.message}`;
        return;
      case "TOKEN_EXPIRING":
        await this.refresh(link);
        return;
      case "MESSAGE":
        this.host.deliver(message.topic, message.data, message.from);
        return;
      case "CHANGE": {
        const paging = link.paging.get(message.collection);
        if (paging) paging.records += message.records.length;
        await this.host.merged(message.collection, message.records, message.cursor, false);
        if (paging && !message.more) {
          link.paging.delete(message.collection);
          this.host.emit("synced", { collection: message.collection, records: paging.records, reset: paging.reset });
        }
        return;
      }
      default:
        return this.answer(link, message);
    }
  }

  private async answer(link: Link, message: ServerMessage): Promise<void> {
    const id = "id" in message ? message.id : undefined;
    if (id === undefined) {
      if (message.type === "ERROR") this.host.emit("error", { message: `${message.code}: ${message.message}` });
      return;
    }
    const internal = link.internal.get(id);
    if (!internal) {
      const pending = link.requests.get(id);
      link.requests.delete(id);
      pending?.resolve(message);
      return;
    }
    if (internal.kind === "replay") {
      link.internal.delete(id);
      link.replaying = false;
      if (message.type === "OP_RESULT") {
        const report = this.host.replica.settle(message.results, Date.now());
        await this.host.settled(report.settled, report.retrying);
        if (report.retrying.length > 0) this.retryLater(link);
        else {
          this.retryFailures = 0;
          this.replay(link);
        }
      } else if (message.type === "ERROR") {
        this.host.emit("error", { message: `replay refused (${message.code}): ${message.message}; retrying` });
        this.retryLater(link);
      }
      return;
    }
    if (message.type === "SYNC_DATA" && internal.kind === "sync") {
      // The answer to a SYNC without a cursor is the whole state too: what the replica
      // confirmed earlier but the server no longer has (a restore) must go, as after a reset.
      await this.host.merged(message.collection, message.records, message.cursor, message.reset === true || internal.full);
      if (message.more) link.paging.set(message.collection, { records: message.records.length, reset: message.reset === true });
      else this.host.emit("synced", { collection: message.collection, records: message.records.length, reset: message.reset === true });
      return;
    }
    if (message.type === "ERROR") {
      link.internal.delete(id);
      const name = internal.kind === "sub" ? internal.topic : internal.kind === "sync" ? internal.collection : "";
      if (internal.kind === "sub") link.topics.delete(name);
      if (internal.kind === "sync") link.syncs.delete(name);
      if (isTemporaryError(message.code)) {
        this.retryLater(link);
      } else if (internal.kind === "sync") {
        this.host.syncRefused(name, message.code, message.message);
      } else {
        this.host.emit("error", { message: `subscription to ${name} ended: ${message.code}: ${message.message}` });
      }
    }
  }

  /** Subscribes, syncs and replays what this link does not have yet. */
  private resume(link: Link): void {
    for (const topic of this.host.topics()) {
      if (link.topics.has(topic)) continue;
      link.topics.add(topic);
      const id = link.nextId++;
      link.internal.set(id, { kind: "sub", topic });
      this.send(link, { type: "SUB", id, topic });
    }
    for (const collection of this.host.syncs()) {
      if (link.syncs.has(collection)) continue;
      link.syncs.add(collection);
      const id = link.nextId++;
      const since = this.host.replica.cursor(collection);
      link.internal.set(id, { kind: "sync", collection, full: since === null });
      this.send(link, since === null ? { type: "SYNC", id, collection } : { type: "SYNC", id, collection, since });
    }
    this.replay(link);
  }

  /** Sends the next batch, bounded by count and bytes; an op that can never fit is refused locally. */
  private replay(link: Link): void {
    if (link.replaying || this.retryTimer !== null || !link.connected) return;
    const { maxMessageBytes, maxValueBytes, maxBatchOps } = link.limits;
    const budget = maxMessageBytes - BATCH_OVERHEAD;
    const maxOps = Math.max(1, Math.min(this.options.replayBatch, maxBatchOps));
    const ops: WireOp[] = [];
    const refused: Settled[] = [];
    let bytes = 0;
    for (const op of [...this.host.replica.outbox]) {
      if (ops.length >= maxOps) break;
      const size = encodeValue(op as unknown as Value).length;
      if (size > budget || encodeValue(op.value).length > maxValueBytes) {
        const why = `the op (${size} bytes) is larger than the server accepts (messages ${maxMessageBytes} bytes, values ${maxValueBytes} bytes)`;
        const settled = this.host.replica.refuseLocally(op.opId, "invalid", why);
        if (settled) refused.push(settled);
        continue;
      }
      if (bytes + size > budget) break;
      bytes += size;
      ops.push(op);
    }
    if (refused.length > 0) void this.host.settled(refused, []);
    if (ops.length === 0) return;
    const id = link.nextId++;
    link.replaying = true;
    link.internal.set(id, { kind: "replay" });
    this.send(link, { type: "OP_BATCH", id, ops });
  }

  /** Holds replay (and renewal of refused subscriptions) back for a backoff delay. */
  private retryLater(link: Link): void {
    if (this.retryTimer !== null) return;
    const delay = backoffDelay(this.options.backoff, this.retryFailures++);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.link === link && link.connected) this.resume(link);
    }, delay);
  }

  private scheduleRefresh(link: Link, expiresAt: number | null): void {
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (expiresAt === null) return;
    const left = expiresAt * 1000 - Date.now();
    // 30 s ahead, or halfway through a shorter life (the server also sends TOKEN_EXPIRING).
    const wait = left > 60_000 ? left - 30_000 : Math.max(0, left / 2);
    this.refreshTimer = setTimeout(() => void this.refresh(link), wait);
  }

  private async refresh(link: Link): Promise<void> {
    let token: string | null;
    try {
      token = await this.token("refresh");
    } catch (e) {
      this.host.emit("error", { message: `getToken failed: ${String(e)}` });
      return;
    }
    if (token !== null && this.link === link) this.send(link, { type: "AUTH", token });
  }

  private clearTimers(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer);
    this.retryTimer = null;
    this.refreshTimer = null;
  }
}
