/**
 * The wire protocol's messages (see proto/PROTOCOL.md) and the client's events.
 * Field names are as on the wire (camelCase).
 */

import type { SyncgateError } from "./errors.js";

/** Any MessagePack value as decoded here. */
export type Value = null | boolean | number | string | Uint8Array | Value[] | { [key: string]: Value };

/** One record of a collection, as the server sends it. */
export interface WireRecord {
  key: string;
  value: Value;
  hlc: string;
}

/** One op of an OP_BATCH. */
export interface WireOp {
  opId: string;
  collection: string;
  key: string;
  value: Value;
  hlc: string;
}

/** The result of one op in OP_RESULT. */
export interface OpOutcome {
  opId: string | number | null;
  ok: boolean;
  code?: string;
  message?: string;
}

/** What the client set aside: a record (`collection`, `key`), a publication (`topic`), or a whole message. */
export interface Unreadable {
  collection?: string;
  key?: string;
  topic?: string;
  reason: string;
}

/** The limits a server announces in AUTH_ACK. */
export interface SessionLimits {
  maxMessageBytes: number;
  maxValueBytes: number;
  maxBatchOps: number;
  /** Deepest nesting of arrays and maps in a value (absent from older servers: 16). */
  maxValueDepth?: number;
  /** Sustained messages per second a connection may send (0: no limit). */
  messagesPerSecond?: number;
  /** Messages a connection may send at once above that rate. */
  messageBurst?: number;
}

export type ClientMessage =
  | { type: "AUTH"; token: string }
  | { type: "PING"; id?: number }
  | { type: "SUB"; id: number; topic: string; presence?: boolean; info?: Value }
  | { type: "UNSUB"; id: number; topic: string }
  | { type: "PUB"; id: number; topic: string; data: Value }
  | { type: "OP_BATCH"; id: number; ops: WireOp[] }
  | { type: "SYNC"; id: number; collection: string; since?: string }
  | { type: "UNSYNC"; id: number; collection: string }
  | { type: "PRESENCE"; id: number; topic: string; after?: number };

/** One present connection on a topic. */
export interface PresenceMember {
  sub: string;
  connId: number;
  info?: Value;
}

export type ServerMessage =
  | { type: "AUTH_REQUIRED"; protocolVersion: number }
  | { type: "AUTH_ACK"; sub: string; roles: string[]; expiresAt: number | null; limits?: SessionLimits }
  | { type: "AUTH_FAIL"; code: string; message: string }
  | { type: "TOKEN_EXPIRING"; expiresAt: number }
  | { type: "PONG"; id?: number }
  | { type: "OK"; id: number }
  | { type: "ERROR"; id?: number; code: string; message: string }
  | { type: "MESSAGE"; topic: string; data: Value; from: string }
  | { type: "OP_RESULT"; id: number; results: OpOutcome[] }
  | {
      type: "SYNC_DATA";
      id: number;
      collection: string;
      records: WireRecord[];
      cursor: string;
      reset?: boolean;
      more?: boolean;
    }
  | { type: "CHANGE"; collection: string; records: WireRecord[]; cursor: string; more?: boolean }
  | { type: "PRESENCE_JOIN"; topic: string; sub: string; connId: number; info?: Value }
  | { type: "PRESENCE_LEAVE"; topic: string; sub: string; connId: number }
  | { type: "PRESENCE_STATE"; id: number; topic: string; members: PresenceMember[]; more?: boolean };

/** Why `getToken` is called. */
export type TokenReason = "connect" | "refresh" | "rejected";

/** Where the connection is. */
export type ConnectionState = "idle" | "connecting" | "connected" | "disconnected" | "stopped";

/** The client's events and their payloads. */
export interface ClientEvents {
  connecting: { attempt: number };
  connected: { sub: string; roles: string[]; expiresAt: number | null };
  disconnected: { code: number | null; reason: string };
  /** The client gave up: `authCode` is the AUTH_FAIL code when it stopped after repeated refusals. */
  stopped: { code: number | null; reason: string; authCode?: string };
  /** A write left the outbox: accepted, or refused for good and rolled back. */
  opSettled: { opId: string; ok: boolean; code?: string; message?: string; collection: string; key: string };
  /** A write was refused with a retryable code: it stays queued and visible. */
  opRetrying: { opId: string; code: string };
  /** A collection's whole snapshot (every page) arrived. */
  synced: { collection: string; records: number; reset: boolean };
  /** Records of a collection changed (from the server, a local write, or another tab). */
  change: { collection: string; keys: string[] };
  /**
   * Something went wrong that the client handles on its own (a provider error,
   * a save that failed, a refused subscription): `error.code` says what.
   */
  error: { message: string; error: SyncgateError; topic?: string; collection?: string };
  /** A topic subscription or a collection sync became live, or was refused (`code`). */
  subscription: { kind: "topic" | "collection"; name: string; state: "live" | "refused"; code?: string };
  /** A record or a publication from the server could not be read (its value breaks the value rule): it was set aside. */
  unreadable: Unreadable;
  /** The connection's state changed (in a follower tab: the leader's connection). */
  state: { state: ConnectionState; sub: string | null };
  /** Whether this tab holds the connection for its storage (one tab per storage name does). */
  leader: { leader: boolean };
}

/**
 * End-to-end encryption's hook (`@syncgate/client/e2e`'s `Encryption`). Only
 * this interface lives in the core, so apps that do not encrypt do not ship
 * the cryptography: the codec, attached once by the client's constructor,
 * wraps the client's record reads and writes (what `Collection` and the React
 * hooks call), sealing values before they are stamped and opening what the
 * replica holds.
 */
export interface ValueCodec {
  attach(client: ValueCodecHost): void;
}

/** What a `ValueCodec` sees of the client it is attached to. */
export interface ValueCodecHost {
  readonly events: {
    on<K extends keyof ClientEvents>(event: K, listener: (payload: ClientEvents[K]) => void): () => void;
    emit<K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]): void;
  };
  /** The stored values (envelopes), as the replica holds them. */
  readonly replica: { get(collection: string, key: string): Value | undefined; entries(collection: string): [string, Value][] };
  /** The record reads and writes of every `Collection`: the codec replaces these three with sealing and opening ones. */
  readonly collectionHost: {
    read(name: string, key: string): Value | undefined;
    readAll(name: string): [string, Value][];
    write(name: string, key: string, value: Value): Promise<string>;
  };
}
