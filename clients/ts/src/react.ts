/**
 * React binding: `SyncgateProvider`, `useCollection`, `useRecord`, `useTopic`,
 * `useConnection`. Each hook subscribes to exactly what it shows and returns
 * a snapshot that only changes when that data changes, so a component
 * re-renders only for its own collection, record, topic or connection state.
 */
import { createContext, createElement, type ReactNode, useContext, useEffect, useState, useSyncExternalStore } from "react";
import type { SyncgateClient } from "./client.js";
import { encodeValue } from "./codec.js";
import type { ClientEvents, ConnectionState, Value } from "./types.js";

const Context = createContext<SyncgateClient | null>(null);

export function SyncgateProvider(props: { client: SyncgateClient; children?: ReactNode }): ReactNode {
  return createElement(Context.Provider, { value: props.client }, props.children);
}

export function useSyncgate(): SyncgateClient {
  const client = useContext(Context);
  if (!client) throw new Error("wrap your app in <SyncgateProvider client={…}>");
  return client;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Every visible record of a collection as `[key, value]` pairs; re-renders when the collection changes. */
export function useCollection(name: string): [string, Value][] {
  const client = useSyncgate();
  const [cache] = useState(() => ({ entries: [] as [string, Value][], stamp: -1, version: 0 }));
  return useSyncExternalStore(
    (notify) =>
      client.collection(name).subscribe(() => {
        cache.version++;
        notify();
      }),
    () => {
      if (cache.stamp !== cache.version) {
        cache.entries = client.collection(name).entries();
        cache.stamp = cache.version;
      }
      return cache.entries;
    },
  );
}

/** One record's visible value; re-renders only when that value changes. */
export function useRecord(name: string, key: string): Value | undefined {
  const client = useSyncgate();
  const [cache] = useState(() => ({ value: undefined as Value | undefined, bytes: null as Uint8Array | null }));
  return useSyncExternalStore(
    (notify) =>
      client.collection(name).subscribe((keys) => {
        if (keys.length === 0 || keys.includes(key)) notify();
      }),
    () => {
      const value = client.collection(name).get(key);
      const bytes = value === undefined ? null : encodeValue(value);
      const same = bytes === null ? cache.bytes === null : cache.bytes !== null && sameBytes(bytes, cache.bytes);
      if (!same) {
        cache.value = value;
        cache.bytes = bytes;
      }
      return cache.value;
    },
  );
}

/** The messages received on a topic since mounting (the latest `limit`). */
export function useTopic(topic: string, limit = 100): { data: Value; from: string }[] {
  const client = useSyncgate();
  const [messages, setMessages] = useState<{ data: Value; from: string }[]>([]);
  useEffect(
    () => client.subscribe(topic, (data, from) => setMessages((m) => [...m.slice(-(limit - 1)), { data, from }])),
    [client, topic, limit],
  );
  return messages;
}

/** The connection's state and the identity it authenticated as. */
export function useConnection(): { state: ConnectionState; sub: string | null; pending: number } {
  const client = useSyncgate();
  const [state, setState] = useState({ state: client.state, sub: null as string | null, pending: client.pending });
  useEffect(() => {
    const update = (sub?: string | null) =>
      setState((s) => {
        const next = { state: client.state, sub: sub === undefined ? s.sub : sub, pending: client.pending };
        return next.state === s.state && next.sub === s.sub && next.pending === s.pending ? s : next;
      });
    const offs = [
      client.on("connected", (e: ClientEvents["connected"]) => update(e.sub)),
      client.on("disconnected", () => update()),
      client.on("connecting", () => update()),
      client.on("stopped", () => update(null)),
      client.on("opSettled", () => update()),
      client.on("change", () => update()),
    ];
    update();
    return () => offs.forEach((off) => off());
  }, [client]);
  return state;
}
