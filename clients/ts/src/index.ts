/**
 * @syncgate/client: the browser (and Node) client of syncgate.
 *
 * ```ts
 * const client = new SyncgateClient({ url: "wss://sync.example.com/ws", getToken: () => fetchToken() });
 * const todos = client.collection("todos/alice");
 * client.connect();
 * await todos.set("t1", { title: "buy milk", done: false });
 * ```
 */
export { SyncgateClient, Collection, NotSavedError, type SyncgateClientOptions } from "./client.js";
export type { WebSocketLike } from "./connector.js";
export { MemoryStorage, type Storage, type StorageChange, type SavedState, type SavedCollection } from "./storage.js";
export { IndexedDBStorage } from "./idb.js";
export { closeAction, isFinalOpCode, type CloseAction } from "./codes.js";
export { HlcClock, parseHlc, formatHlc, compareHlc, type Hlc } from "./hlc.js";
export { Replica, type PendingOp, type Settled, type SettleReport } from "./replica.js";
export { backoffDelay, type BackoffOptions } from "./backoff.js";
export { encodeMessage, decodeMessage, decodeServerMessage, encodeValue } from "./codec.js";
export type {
  ClientEvents,
  ClientMessage,
  ConnectionState,
  OpOutcome,
  ServerMessage,
  SessionLimits,
  TokenReason,
  Unreadable,
  Value,
  WireOp,
  WireRecord,
} from "./types.js";
