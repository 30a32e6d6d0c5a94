/**
 * Internals for tests and tools (`@syncgate/client/internal`): the replica,
 * the clock and the codec. No stability promise: apps use the main entry.
 */
export { Replica, type PendingOp, type Settled, type SettleReport } from "./replica.js";
export { HlcClock, parseHlc, formatHlc, compareHlc, type Hlc } from "./hlc.js";
export { encodeMessage, decodeMessage, decodeServerMessage, encodeValue, decodeValue } from "./codec.js";
export { backoffDelay } from "./backoff.js";
export type { ClientMessage, ServerMessage, WireOp, OpOutcome, SessionLimits } from "./types.js";
