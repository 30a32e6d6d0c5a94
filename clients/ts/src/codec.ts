/**
 * MessagePack on the wire, with @msgpack/msgpack. Integers decode as numbers
 * (ids and times fit in 2^53); every message is one map with a string `type`.
 *
 * Decoding never gives up on a whole connection because of one value: a
 * record or a publication whose value breaks the protocol's value rule (a
 * map key that is not a string, an extension type) is set aside and
 * reported, and the rest of the message is used.
 */
import { Decoder, Encoder, ExtData } from "@msgpack/msgpack";
import type { ClientMessage, ServerMessage, Unreadable, Value } from "./types.js";

/** Marks a map key that was not a string, so the value holding it can be set aside. */
const NOT_A_STRING_KEY = "\u0000syncgate:not-a-string-key";

const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder({ mapKeyConverter: (key) => (typeof key === "string" ? key : NOT_A_STRING_KEY) });

export function encodeMessage(message: ClientMessage): Uint8Array {
  return encoder.encode(message);
}

/** Decodes one server message; throws when it is not a map with a string `type`. */
export function decodeMessage(bytes: Uint8Array): ServerMessage {
  const value = decoder.decode(bytes) as unknown;
  if (typeof value !== "object" || value === null || typeof (value as { type?: unknown }).type !== "string") {
    throw new Error("not a message");
  }
  return value as ServerMessage;
}

/** A server message with what could not be read taken out: `message` is null when nothing of it can be used. */
export interface Decoded {
  message: ServerMessage | null;
  unreadable: Unreadable[];
}

/**
 * Decodes one server message leniently: records whose values break the value
 * rule are dropped from `SYNC_DATA` and `CHANGE` (and reported), a `MESSAGE`
 * whose data breaks it is dropped whole (and reported), and bytes that are no
 * message at all are reported instead of thrown.
 */
export function decodeServerMessage(bytes: Uint8Array): Decoded {
  let message: ServerMessage;
  try {
    message = decodeMessage(bytes);
  } catch (e) {
    return { message: null, unreadable: [{ reason: `undecodable: ${String(e)}` }] };
  }
  const unreadable: Unreadable[] = [];
  if (message.type === "SYNC_DATA" || message.type === "CHANGE") {
    const collection = message.collection;
    if (typeof collection !== "string" || !Array.isArray(message.records)) {
      return { message: null, unreadable: [{ reason: `malformed ${message.type}` }] };
    }
    const records = message.records.filter((record) => {
      const reason = typeof record.key === "string" ? unreadableReason(record.value) : "the key is not a string";
      if (reason !== null) unreadable.push({ collection, key: String(record.key), reason });
      return reason === null;
    });
    return { message: { ...message, records }, unreadable };
  }
  if (message.type === "MESSAGE") {
    const reason = unreadableReason(message.data);
    if (reason !== null) return { message: null, unreadable: [{ topic: message.topic, reason }] };
  }
  return { message, unreadable };
}

/** Deepest nesting of arrays and maps in a value the app writes (the protocol's value rule). */
export const MAX_VALUE_DEPTH = 16;

/**
 * Why a value breaks the protocol's value rule, or null. One walk serves
 * both directions: a value the app wants to write (nested deeper than
 * `maxDepth`, or holding what MessagePack cannot carry as a plain value: an
 * extension type, a Date, a Map or Set, which the encoder would turn into
 * something else) and a decoded one (`maxDepth` unbounded: the server
 * enforces its own, which may be higher; a map key that was not a string).
 */
export function valueProblem(value: unknown, maxDepth = MAX_VALUE_DEPTH, depth = 0): string | null {
  if (value instanceof ExtData || value instanceof Date) return "holds a MessagePack extension type";
  if (value instanceof Map || value instanceof Set) return "holds a Map or a Set";
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return null;
  if (depth >= maxDepth) return `nests deeper than ${maxDepth}`;
  for (const [key, item] of Object.entries(value)) {
    if (key === NOT_A_STRING_KEY) return "has a map key that is not a string";
    const problem = valueProblem(item, maxDepth, depth + 1);
    if (problem !== null) return problem;
  }
  return null;
}

/** Why a decoded value breaks the value rule, or null when it keeps it. */
function unreadableReason(value: unknown): string | null {
  return valueProblem(value, Infinity);
}

/** The MessagePack encoding of a value: what last-writer-wins ties break on. */
export function encodeValue(value: Value): Uint8Array {
  return encoder.encode(value);
}

/** Decodes any MessagePack value (tests and storage). */
export function decodeValue(bytes: Uint8Array): Value {
  return decoder.decode(bytes) as Value;
}
