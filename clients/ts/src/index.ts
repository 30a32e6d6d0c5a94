/**
 * @syncgate/client: the browser (and Node) client of syncgate.
 *
 * ```ts
 * const client = new SyncgateClient({ url: "wss://sync.example.com/ws", getToken: () => fetchToken() });
 * const todos = client.collection("todos/alice");
 * client.connect();
 * await todos.set("t1", { title: "buy milk", done: false });
 * ```
 *
 * The replica, clock and codec are internal; `@syncgate/client/internal`
 * exposes them for tests and tools, without a stability promise.
 */
export { SyncgateClient, NotSavedError, type SyncgateClientOptions } from "./client.js";
export { Collection, type Subscription, type SubscriptionState } from "./collection.js";
export { SyncgateError } from "./errors.js";
export { Presence, type PresenceEvents } from "./presence.js";
export type { PingOptions } from "./connector.js";
export type { WebSocketLike } from "./link.js";
export { MemoryStorage, type Storage, type StorageChange, type SavedState, type SavedCollection } from "./storage.js";
export { IndexedDBStorage } from "./idb.js";
export { closeAction, isFinalOpCode, type CloseAction } from "./codes.js";
export type { BackoffOptions } from "./backoff.js";
export type {
  ClientEvents,
  ConnectionState,
  PresenceMember,
  TokenReason,
  Unreadable,
  Value,
  ValueCodec,
  WireRecord,
} from "./types.js";
