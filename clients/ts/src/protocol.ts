/**
 * The protocol core of one connection: what each server message means (auth,
 * answers, syncs, replay verdicts, presence) and what the client sends to
 * keep the server's subscriptions, syncs and outbox in line with the app.
 * It never opens or closes sockets and never waits for the network: the
 * driver (`connector.ts`) feeds it messages in order and tells it which link
 * is current. Timers it arms (retry, refresh) belong to the link.
 */
import { backoffDelay } from "./backoff.js";
import { encodeMessage, encodeValue } from "./codec.js";
import { isTemporaryError } from "./codes.js";
import type { ConnectorOptions, Host } from "./connector.js";
import type { Internal, Link, Pending } from "./link.js";
import type { Settled } from "./replica.js";
import type { ClientEvents, ClientMessage, PresenceMember, ServerMessage, TokenReason, Value, WireOp } from "./types.js";

/** Room in a batch for the OP_BATCH map around its ops. */
const BATCH_OVERHEAD = 64;

/** What the protocol core needs from its driver. */
export interface Driver {
  readonly host: Host;
  readonly options: ConnectorOptions;
  /** Consecutive retryable refusals: the backoff of the next retry. */
  retryFailures: number;
  token(reason: TokenReason): Promise<string | null>;
  error(code: string, message: string, context?: { topic?: string; collection?: string }): void;
  halt(stopped: ClientEvents["stopped"]): void;
  /** Whether `link` is still the driver's current connection. */
  current(link: Link): boolean;
  /** Publications queued while disconnected, handed over once authenticated. */
  takeQueued(): { message: { type: "PUB"; id: number; topic: string; data: Value }; pending: Pending }[];
}

export class Protocol {
  readonly #d: Driver;

  constructor(d: Driver) {
    this.#d = d;
  }

  send(link: Link, message: ClientMessage): void {
    link.pacer.send(encodeMessage(message));
  }

  /** Sends a request whose answer the core handles itself (`internal`), under a fresh id. */
  ask(link: Link, internal: Internal, message: (id: number) => ClientMessage): void {
    const id = link.nextId++;
    link.internal.set(id, internal);
    this.send(link, message(id));
  }

  request(link: Link, message: { type: "PUB"; id: number; topic: string; data: Value }, pending: Pending): void {
    const id = link.nextId++;
    link.requests.set(id, pending);
    this.send(link, { ...message, id });
  }

  /** Handles one message; returns the token reason for the next AUTH when it changes. */
  async handle(link: Link, message: ServerMessage, why: TokenReason, noToken: () => void): Promise<TokenReason | void> {
    switch (message.type) {
      case "AUTH_REQUIRED": {
        let token: string | null;
        try {
          token = await this.#d.token(why);
        } catch (e) {
          this.#d.error("provider", `getToken failed: ${String(e)}`);
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
        this.#scheduleRefresh(link, message.expiresAt);
        if (link.connected) return;
        if (!(await this.#d.host.identify(message.sub))) {
          this.#d.halt({ code: null, reason: `the replica is not ${message.sub}'s`, authCode: "identity_mismatch" });
          link.socket.close(1000, "identity mismatch");
          return;
        }
        link.connected = true;
        this.#d.retryFailures = 0;
        this.#d.host.setState("connected");
        this.#d.host.emit("connected", { sub: message.sub, roles: message.roles, expiresAt: message.expiresAt });
        for (const { message: queued, pending } of this.#d.takeQueued()) this.request(link, queued, pending);
        this.resume(link);
        return "refresh";
      }
      case "AUTH_FAIL":
        link.authFail = { code: message.code, message: message.message };
        return;
      case "TOKEN_EXPIRING":
        await this.#refresh(link);
        return;
      case "MESSAGE":
        this.#d.host.deliver(message.topic, message.data, message.from);
        return;
      case "PRESENCE_JOIN":
      case "PRESENCE_LEAVE": {
        const member: PresenceMember = { sub: message.sub, connId: message.connId };
        if (message.type === "PRESENCE_JOIN" && message.info !== undefined) member.info = message.info;
        if (link.topics.get(message.topic)?.presence) {
          this.#d.host.presence(message.topic, message.type === "PRESENCE_JOIN" ? { join: member } : { leave: member });
        }
        return;
      }
      case "CHANGE": {
        if (!link.syncs.has(message.collection)) return;
        const paging = link.paging.get(message.collection);
        if (paging) paging.records += message.records.length;
        await this.#d.host.merged(message.collection, message.records, message.cursor, false);
        if (paging && !message.more) {
          link.paging.delete(message.collection);
          this.#d.host.emit("synced", { collection: message.collection, records: paging.records, reset: paging.reset });
        }
        return;
      }
      default:
        return this.#answer(link, message);
    }
  }

  async #answer(link: Link, message: ServerMessage): Promise<void> {
    const id = "id" in message ? message.id : undefined;
    if (id === undefined) {
      if (message.type === "ERROR") this.#d.error(message.code, message.message);
      return;
    }
    const internal = link.internal.get(id);
    if (!internal) {
      const pending = link.requests.get(id);
      link.requests.delete(id);
      pending?.resolve(message);
      return;
    }
    const paged = internal.kind === "presence" && message.type === "PRESENCE_STATE" && message.more === true && message.members.length > 0;
    if (!paged) link.internal.delete(id);
    switch (internal.kind) {
      case "replay":
        return this.#replayAnswered(link, message);
      case "sync":
        if (message.type === "SYNC_DATA") return this.#syncData(link, internal, message);
        break;
      case "sub":
        if (message.type === "OK") {
          this.#d.host.emit("subscription", { kind: "topic", name: internal.topic, state: "live" });
          if (link.topics.get(internal.topic)?.presence) this.ask(link, { kind: "presence", topic: internal.topic, members: [] }, (id) => ({ type: "PRESENCE", id, topic: internal.topic }));
          return;
        }
        break;
      case "presence":
        if (message.type === "PRESENCE_STATE") {
          internal.members.push(...message.members);
          const last = message.members[message.members.length - 1];
          if (message.more && last) this.send(link, { type: "PRESENCE", id, topic: internal.topic, after: last.connId });
          else this.#d.host.presence(internal.topic, { reset: internal.members });
          return;
        }
        break;
      default:
        return;
    }
    if (message.type !== "ERROR") return;
    const kind = internal.kind;
    const name = kind === "sync" ? internal.collection : internal.topic;
    if (kind === "sub") link.topics.delete(name);
    if (kind === "sync") link.syncs.delete(name);
    if (isTemporaryError(message.code)) {
      this.#retryLater(link);
      return;
    }
    const context = kind === "sync" ? { collection: name } : { topic: name };
    this.#d.host.emit("subscription", { kind: kind === "sync" ? "collection" : "topic", name, state: "refused", code: message.code });
    this.#d.error(message.code, `${name} refused: ${message.message}`, context);
    if (kind === "sync") await this.#d.host.syncRefused(name, message.code, message.message);
  }

  async #syncData(link: Link, internal: Extract<Internal, { kind: "sync" }>, message: Extract<ServerMessage, { type: "SYNC_DATA" }>): Promise<void> {
    // The answer to a SYNC without a cursor is the whole state too: what the replica
    // confirmed earlier but the server no longer has (a restore) must go, as after a reset.
    if (!link.syncs.has(message.collection)) return;
    await this.#d.host.merged(message.collection, message.records, message.cursor, message.reset === true || internal.full);
    this.#d.host.emit("subscription", { kind: "collection", name: message.collection, state: "live" });
    if (message.more) link.paging.set(message.collection, { records: message.records.length, reset: message.reset === true });
    else this.#d.host.emit("synced", { collection: message.collection, records: message.records.length, reset: message.reset === true });
  }

  async #replayAnswered(link: Link, message: ServerMessage): Promise<void> {
    link.replaying = false;
    if (message.type === "OP_RESULT") {
      const report = this.#d.host.replica.settle(message.results, Date.now());
      await this.#d.host.settled(report.settled, report.retrying);
      if (report.retrying.length > 0) this.#retryLater(link);
      else {
        this.#d.retryFailures = 0;
        this.#replay(link);
      }
    } else if (message.type === "ERROR") {
      this.#d.error(message.code, `replay refused: ${message.message}`);
      this.#retryLater(link);
    }
  }

  /** Subscribes, syncs and replays what this link does not have yet; releases what the app let go. */
  resume(link: Link): void {
    const wanted = this.#d.host.topics();
    for (const [topic, announced] of link.topics) {
      if (wanted.has(topic)) continue;
      link.topics.delete(topic);
      this.ask(link, { kind: "unsub", topic }, (id) => ({ type: "UNSUB", id, topic }));
      if (announced.presence) this.#d.host.presence(topic, { reset: [] });
    }
    for (const [topic, want] of wanted) {
      const has = link.topics.get(topic);
      if (has && has.presence === want.presence && has.info === want.info) continue;
      link.topics.set(topic, { presence: want.presence, info: want.info });
      this.ask(link, { kind: "sub", topic }, (id) => {
        const sub: ClientMessage = { type: "SUB", id, topic };
        if (want.presence) sub.presence = true;
        if (want.presence && want.info !== undefined) sub.info = want.info;
        return sub;
      });
    }
    const syncs = new Set(this.#d.host.syncs());
    for (const collection of link.syncs) {
      if (syncs.has(collection)) continue;
      link.syncs.delete(collection);
      link.paging.delete(collection);
      this.ask(link, { kind: "unsync", collection }, (id) => ({ type: "UNSYNC", id, collection }));
    }
    for (const collection of syncs) {
      if (link.syncs.has(collection)) continue;
      link.syncs.add(collection);
      const since = this.#d.host.replica.cursor(collection);
      this.ask(link, { kind: "sync", collection, full: since === null }, (id) =>
        since === null ? { type: "SYNC", id, collection } : { type: "SYNC", id, collection, since },
      );
    }
    this.#replay(link);
  }

  /** Sends the next batch, bounded by count and bytes; an op that can never fit is refused locally. */
  #replay(link: Link): void {
    if (link.replaying || link.retryTimer !== null || !link.connected) return;
    const { maxMessageBytes, maxValueBytes, maxBatchOps } = link.limits;
    const budget = maxMessageBytes - BATCH_OVERHEAD;
    const maxOps = Math.max(1, Math.min(this.#d.options.replayBatch, maxBatchOps));
    const ops: WireOp[] = [];
    const refused: Settled[] = [];
    let bytes = 0;
    for (const op of [...this.#d.host.replica.outbox]) {
      if (ops.length >= maxOps) break;
      const size = encodeValue(op as unknown as Value).length;
      if (size > budget || encodeValue(op.value).length > maxValueBytes) {
        const settled = this.#d.host.replica.refuseLocally(op.opId, "invalid", `too large for the server (${size} bytes)`);
        if (settled) refused.push(settled);
        continue;
      }
      if (bytes + size > budget) break;
      bytes += size;
      ops.push(op);
    }
    if (refused.length > 0) void this.#d.host.settled(refused, []);
    if (ops.length === 0) return;
    link.replaying = true;
    this.ask(link, { kind: "replay" }, (id) => ({ type: "OP_BATCH", id, ops }));
  }

  /** Holds replay (and renewal of refused subscriptions) back for a backoff delay, on this link only. */
  #retryLater(link: Link): void {
    if (link.retryTimer !== null || !link.alive) return;
    const delay = backoffDelay(this.#d.options.backoff, this.#d.retryFailures++);
    link.retryTimer = setTimeout(() => {
      link.retryTimer = null;
      if (this.#d.current(link) && link.connected) this.resume(link);
    }, delay);
  }

  #scheduleRefresh(link: Link, expiresAt: number | null): void {
    if (link.refreshTimer !== null) clearTimeout(link.refreshTimer);
    link.refreshTimer = null;
    if (expiresAt === null) return;
    const left = expiresAt * 1000 - Date.now();
    // 30 s ahead, or halfway through a shorter life (the server also sends TOKEN_EXPIRING).
    const wait = left > 60_000 ? left - 30_000 : Math.max(0, left / 2);
    link.refreshTimer = setTimeout(() => void this.#refresh(link), wait);
  }

  async #refresh(link: Link): Promise<void> {
    let token: string | null;
    try {
      token = await this.#d.token("refresh");
    } catch (e) {
      this.#d.error("provider", `getToken failed: ${String(e)}`);
      return;
    }
    if (token !== null && this.#d.current(link) && link.alive) this.send(link, { type: "AUTH", token });
  }
}
