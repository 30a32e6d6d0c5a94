/**
 * The leader tab's connection driver: opens sockets, fetches tokens for the
 * URL, checks liveness with PING, gives a half-open connection up, and
 * reconnects by the close-code table (stopping after repeated refusals).
 * What the messages mean is the protocol core's (`protocol.ts`); the client
 * (`client.ts`) owns the replica and storage and is reached through `Host`.
 */
import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { decodeServerMessage } from "./codec.js";
import { closeAction } from "./codes.js";
import { SyncgateError } from "./errors.js";
import { type End, Link, type Pending, type WebSocketLike } from "./link.js";
import { type Driver, Protocol } from "./protocol.js";
import type { Replica, Settled } from "./replica.js";
import type {
  ClientEvents,
  ConnectionState,
  PresenceMember,
  TokenReason,
  Value,
  WireRecord,
} from "./types.js";

export type { WebSocketLike } from "./link.js";

/** Refusals of freshly fetched tokens in a row after which the client stops (each counts against the server's per-address limit). */
export const MAX_TOKEN_REFUSALS = 3;

/** Liveness: PING after `intervalMs` without a message from the server; reconnect when nothing arrives `timeoutMs` later. */
export interface PingOptions {
  intervalMs: number;
  timeoutMs: number;
}

export interface ConnectorOptions {
  url: string;
  getToken: ((reason: TokenReason) => Promise<string | null> | string | null) | undefined;
  tokenIn: "message" | "query";
  WebSocket: WebSocketLike;
  backoff: BackoffOptions;
  replayBatch: number;
  ping: PingOptions | null;
}

/** A topic the app wants: plain, or present with optional `info`. */
export interface WantedTopic {
  presence: boolean;
  info: Value | undefined;
}

/** What the connector needs from the client. */
export interface Host {
  readonly replica: Replica;
  syncs(): Iterable<string>;
  topics(): ReadonlyMap<string, WantedTopic>;
  setState(state: ConnectionState): void;
  emit<K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]): void;
  deliver(topic: string, data: Value, from: string): void;
  /** Merges server records (and a cursor) into the replica and storage. */
  merged(collection: string, records: WireRecord[], cursor: string, reset: boolean): Promise<void>;
  /** Persists settled ops (and reports them). */
  settled(settled: Settled[], retrying: { opId: string; code: string }[]): Promise<void>;
  /** A sync was refused for good (`forbidden`, …). */
  syncRefused(collection: string, code: string, message: string): Promise<void>;
  /**
   * The server authenticated `sub`: false when the stored replica belongs to
   * another identity (its outbox must never be replayed under this token).
   */
  identify(sub: string): Promise<boolean>;
  /** Presence on a topic: the whole list (`reset`), or one member joining or leaving. */
  presence(topic: string, change: { reset: PresenceMember[] } | { join: PresenceMember } | { leave: PresenceMember }): void;
}

/** The socket driver: opens, watches and replaces connections; the protocol core (`protocol.ts`) speaks on them. */
export class Connector implements Driver {
  #link: Link | null = null;
  #stopped = false;
  #wakeSleep: (() => void) | null = null;
  retryFailures = 0;
  readonly #protocol: Protocol = new Protocol(this);
  /** Closes with 4029 in a row: each one backs off longer. */
  #rateLimitedCloses = 0;
  readonly #queued: { message: { type: "PUB"; id: number; topic: string; data: Value }; pending: Pending }[] =
    [];
  readonly #onOnline = () => this.#wakeSleep?.();
  readonly #onOffline = () => this.#drop(this.#link, "offline");

  constructor(
    readonly host: Host,
    readonly options: ConnectorOptions,
  ) {}

  start(): void {
    globalThis.addEventListener?.("online", this.#onOnline);
    globalThis.addEventListener?.("offline", this.#onOffline);
    void this.#run();
  }

  /** Stops reconnecting and closes the socket; resolves once the socket is gone. */
  async stop(): Promise<void> {
    this.#stopped = true;
    globalThis.removeEventListener?.("online", this.#onOnline);
    globalThis.removeEventListener?.("offline", this.#onOffline);
    const link = this.#link;
    if (link) {
      const closed = new Promise<void>((resolve) => {
        const previous = link.socket.onclose;
        link.socket.onclose = (event) => {
          previous?.(event);
          resolve();
        };
        // A socket that never answers the close frame is not waited for long.
        setTimeout(resolve, 1000);
      });
      link.socket.close(1000, "closed by the app");
      await closed;
      link.end({ code: 1000, reason: "closed by the app", connected: link.connected });
    }
    this.#wakeSleep?.();
    for (const { pending } of this.#queued.splice(0)) pending.reject(new SyncgateError("closed", "the client is closed"));
  }

  /** New or released writes, subscriptions or syncs: bring the connection in line. */
  wake(): void {
    if (this.#link?.connected) this.#protocol.resume(this.#link);
  }

  /** Publishes (queued while disconnected); resolves on OK, rejects with a `SyncgateError` on ERROR. */
  publish(topic: string, data: Value): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const pending: Pending = {
        resolve: (answer) => {
          if (answer.type === "OK") resolve();
          else if (answer.type === "ERROR") reject(new SyncgateError(answer.code, answer.message, { topic }));
          else reject(new SyncgateError("internal", `unexpected answer ${answer.type}`, { topic }));
        },
        reject,
      };
      const message = { type: "PUB" as const, id: 0, topic, data };
      if (this.#link?.connected) this.#protocol.request(this.#link, message, pending);
      else if (this.#queued.length >= 1000) reject(new SyncgateError("offline_queue_full", "too many queued", { topic }));
      else this.#queued.push({ message, pending });
    });
  }

  async #run(): Promise<void> {
    let attempt = 0;
    let reason: TokenReason = "connect";
    let refusals = 0;
    while (!this.#stopped) {
      this.host.setState("connecting");
      this.host.emit("connecting", { attempt });
      const end = await this.#connectOnce(reason);
      if (this.#stopped) return;
      if (end.noToken) {
        this.halt({ code: null, reason: end.reason });
        return;
      }
      this.host.setState("disconnected");
      this.host.emit("disconnected", { code: end.code, reason: end.reason });
      if (end.connected) attempt = 0;
      if (end.code !== 4029) this.#rateLimitedCloses = 0;
      refusals = end.code === 4001 ? (end.connected ? 1 : refusals + 1) : 0;
      if (refusals >= MAX_TOKEN_REFUSALS) {
        // The token source keeps producing tokens the server refuses: every further
        // attempt would count against the server's per-address limit, for every user behind it.
        const stopped: ClientEvents["stopped"] = { code: end.code, reason: `${refusals} tokens in a row refused: ${end.reason}` };
        if (end.authCode !== undefined) stopped.authCode = end.authCode;
        this.halt(stopped);
        return;
      }
      switch (closeAction(end.code)) {
        case "stop":
          this.halt({ code: end.code, reason: end.reason });
          return;
        case "newToken":
          reason = "rejected";
          break;
        case "refreshToken":
          reason = "refresh";
          break;
        case "backOff":
          attempt = Math.max(attempt, 4 + this.#rateLimitedCloses++);
          reason = "connect";
          break;
        default:
          reason = "connect";
      }
      await this.#sleep(backoffDelay(this.options.backoff, attempt++));
    }
  }

  halt(stopped: ClientEvents["stopped"]): void {
    this.#stopped = true;
    this.host.setState("stopped");
    this.host.emit("stopped", stopped);
    for (const { pending } of this.#queued.splice(0)) pending.reject(new SyncgateError("stopped", `the client stopped: ${stopped.reason}`));
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wakeSleep = done;
    });
  }

  async token(reason: TokenReason): Promise<string | null> {
    if (!this.options.getToken) return null;
    return (await this.options.getToken(reason)) ?? null;
  }

  error(code: string, message: string, context: { topic?: string; collection?: string } = {}): void {
    this.host.emit("error", { message: `${code}: ${message}`, error: new SyncgateError(code, message, context), ...context });
  }

  current(link: Link): boolean {
    return this.#link === link;
  }

  takeQueued(): { message: { type: "PUB"; id: number; topic: string; data: Value }; pending: Pending }[] {
    return this.#queued.splice(0);
  }

  /** Gives a connection up at once: a half-open socket may never deliver its close event. */
  #drop(link: Link | null, reason: string): void {
    if (!link) return;
    link.socket.close(1000, reason);
    link.end({ code: null, reason, connected: link.connected });
  }

  async #connectOnce(reason: TokenReason): Promise<End> {
    let url = this.options.url;
    if (this.options.tokenIn === "query" && this.options.getToken) {
      let token: string | null;
      try {
        token = await this.token(reason);
      } catch (e) {
        return { code: null, reason: `getToken failed: ${String(e)}`, connected: false };
      }
      if (token === null) return { code: null, reason: "signed out", connected: false, noToken: true };
      if (this.#stopped) return { code: null, reason: "closed by the app", connected: false };
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
      const link = new Link(socket, (end) => {
        if (this.#link === link) this.#link = null;
        resolve(end);
      });
      this.#link = link;
      let noToken = false;
      let why = reason;
      socket.onopen = () => this.#armLiveness(link);
      socket.onmessage = (event) => {
        if (!link.alive) return;
        this.#armLiveness(link);
        // A value that cannot be read is set aside and reported; the connection stays.
        const decoded = decodeServerMessage(new Uint8Array(event.data as ArrayBuffer));
        for (const unreadable of decoded.unreadable) this.host.emit("unreadable", unreadable);
        const message = decoded.message;
        if (message === null) return;
        link.queue = link.queue
          .then(() =>
            this.#protocol.handle(link, message, why, () => {
              noToken = true;
            }),
          )
          .then((next) => {
            if (next) why = next;
          })
          .catch((e: unknown) => this.error("internal", `handling ${message.type}: ${String(e)}`));
      };
      socket.onclose = (event) => {
        const code = event.code === 1005 || event.code === 1006 ? null : event.code;
        const fail = link.authFail;
        // The close reason is usually the AUTH_FAIL code again: say it once.
        const reasonText =
          fail === null
            ? event.reason || "connection closed"
            : event.reason && event.reason !== fail.code
              ? `${event.reason}: ${fail.code}: ${fail.message}`
              : `${fail.code}: ${fail.message}`;
        const end: End = { code, reason: reasonText, connected: link.connected, noToken };
        if (fail !== null) end.authCode = fail.code;
        link.end(end);
      };
      socket.onerror = () => undefined;
    });
  }

  /** Re-arms the quiet timer: any message from the server proves the connection alive. */
  #armLiveness(link: Link): void {
    const ping = this.options.ping;
    if (ping === null || !link.alive) return;
    if (link.quietTimer !== null) clearTimeout(link.quietTimer);
    if (link.deadTimer !== null) clearTimeout(link.deadTimer);
    link.deadTimer = null;
    link.quietTimer = setTimeout(() => {
      link.quietTimer = null;
      this.#protocol.ask(link, { kind: "ping" }, (id) => ({ type: "PING", id }));
      link.deadTimer = setTimeout(() => this.#drop(link, `no answer to PING within ${ping.timeoutMs} ms`), ping.timeoutMs);
    }, ping.intervalMs);
  }
}
