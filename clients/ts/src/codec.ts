/**
 * MessagePack on the wire, with @msgpack/msgpack. Integers decode as numbers
 * (ids and times fit in 2^53); every message is one map with a string `type`.
 */
import { Decoder, Encoder } from "@msgpack/msgpack";
import type { ClientMessage, ServerMessage, Value } from "./types.js";

const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder();

export function encodeMessage(message: ClientMessage): Uint8Array {
  return encoder.encode(message);
}

/** Decodes one server message; throws when it is not a map with a string `type`. */
export function decodeMessage(bytes: Uint8Array): ServerMessage {
  const value = decoder.decode(bytes) as unknown;
  if (typeof value !== "object" || value === null || typeof (value as { type?: unknown }).type !== "string") {
    throw new Error("not a syncgate message");
  }
  return value as ServerMessage;
}

/** The MessagePack encoding of a value: what last-writer-wins ties break on. */
export function encodeValue(value: Value): Uint8Array {
  return encoder.encode(value);
}

/** Decodes any MessagePack value (tests and storage). */
export function decodeValue(bytes: Uint8Array): Value {
  return decoder.decode(bytes) as Value;
}
