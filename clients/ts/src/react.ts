"use client";
/**
 * React binding: `SyncgateProvider`, `useCollection`, `useRecord`, `useTopic`,
 * `usePresence`, `useConnection`. Each hook holds a handle (a sync, a
 * subscription, presence) from mount to unmount or until its arguments
 * change, passes `useSyncExternalStore` a subscribe function that stays the
 * same across renders, and returns a snapshot that only changes when its data
 * does. On the server (`getServerSnapshot`) every hook returns the empty,
 * not-yet-synced state.
 */
import { createContext, createElement, type ReactNode, useCallback, useContext, useEffect, useRef, useState, useSyncExternalStore } from "react";
import type { SyncgateClient } from "./client.js";
import { encodeValue } from "./codec.js";
import type { ConnectionState, PresenceMember, Value } from "./types.js";

const Context = createContext<SyncgateClient | null>(null);
const NONE: never[] = [];
const noSnapshot = () => NONE;
const noValue = () => undefined;

export function SyncgateProvider(props: { client: SyncgateClient; children?: ReactNode }): ReactNode {
  return createElement(Context.Provider, { value: props.client }, props.children);
}

export function useSyncgate(): SyncgateClient {
  const client = useContext(Context);
  if (!client) throw Error("no <SyncgateProvider>");
  return client;
}

/** Holds a collection handle while subscribed: the sync starts on mount and stops (UNSYNC) with the last holder. */
function useCollectionStore(name: string, onChange: (keys: string[]) => boolean) {
  const client = useSyncgate();
  const changed = useRef(onChange);
  changed.current = onChange;
  return useCallback(
    (notify: () => void) => {
      const handle = client.collection(name);
      const off = handle.subscribe((keys) => {
        if (changed.current(keys)) notify();
      });
      return () => {
        off();
        handle.close();
      };
    },
    [client, name],
  );
}

/** Every visible record of a collection as `[key, value]` pairs; follows `name`. */
export function useCollection<T = Value>(name: string): [string, T][] {
  const client = useSyncgate();
  // Dropped on every change; kept per name, so switching collections never shows the last one.
  const cache = useRef<{ name: string; entries: [string, Value][] } | null>(null);
  const subscribe = useCollectionStore(name, () => !(cache.current = null));
  return useSyncExternalStore(
    subscribe,
    () => {
      if (cache.current?.name !== name) cache.current = { name, entries: client.collectionHost.readAll(name) };
      return cache.current.entries as [string, T][];
    },
    noSnapshot,
  );
}

/** One record's visible value; re-renders only when that value changes; follows its arguments. */
export function useRecord<T = Value>(name: string, key: string): T | undefined {
  const client = useSyncgate();
  // The value's MessagePack bytes as text: an equal value keeps the same snapshot.
  const cache = useRef({ value: undefined as Value | undefined, bytes: "" });
  const subscribe = useCollectionStore(name, (keys) => keys.length === 0 || keys.includes(key));
  return useSyncExternalStore(
    subscribe,
    () => {
      const value = client.collectionHost.read(name, key);
      const bytes = value === undefined ? "" : String(encodeValue(value));
      if (bytes !== cache.current.bytes) cache.current = { value, bytes };
      return cache.current.value as T | undefined;
    },
    noValue,
  );
}

/** The messages received on `topic` since it was last set (the latest `limit`); subscribed while mounted. */
export function useTopic<T = Value>(topic: string, limit = 100): { data: T; from: string }[] {
  const client = useSyncgate();
  const [state, setState] = useState({ topic, messages: NONE as { data: T; from: string }[] });
  useEffect(
    () =>
      client.subscribe(topic, (data, from) =>
        setState((s) => ({ topic, messages: [...(s.topic === topic ? s.messages : NONE).slice(1 - limit), { data: data as T, from }] })),
      ),
    [client, topic, limit],
  );
  return state.topic === topic ? state.messages : NONE;
}

/** Who is present on `topic` (this client too, with `info`), while mounted. */
export function usePresence(topic: string, info?: Value): PresenceMember[] {
  const client = useSyncgate();
  const handle = useRef<{ members(): PresenceMember[] } | null>(null);
  const encoded = info === undefined ? "" : JSON.stringify(info);
  const subscribe = useCallback(
    (notify: () => void) => {
      const presence = client.presence(topic, { info });
      handle.current = presence;
      const off = presence.on("change", notify);
      notify();
      return () => {
        off();
        presence.close();
        handle.current = null;
      };
    },
    // `info` by its content: a new object literal each render must not re-announce.
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [client, topic, encoded],
  );
  return useSyncExternalStore(subscribe, () => handle.current?.members() ?? NONE, noSnapshot);
}

/** The connection's state and the identity it authenticated as (read from the client, so late mounts see it). */
export function useConnection(): { state: ConnectionState; sub: string | null; pending: number } {
  const client = useSyncgate();
  const cache = useRef(SERVER_CONNECTION);
  const subscribe = useCallback(
    (notify: () => void) => {
      const offs = (["state", "connected", "opSettled", "change"] as const).map((e) => client.on(e, notify));
      return () => offs.forEach((off) => off());
    },
    [client],
  );
  const snapshot = () => {
    const { state, sub, pending } = client;
    const c = cache.current;
    if (c.state !== state || c.sub !== sub || c.pending !== pending) cache.current = { state, sub, pending };
    return cache.current;
  };
  return useSyncExternalStore(subscribe, snapshot, () => SERVER_CONNECTION);
}

const SERVER_CONNECTION: { state: ConnectionState; sub: string | null; pending: number } = { state: "idle", sub: null, pending: 0 };
