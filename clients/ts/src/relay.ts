/**
 * What passes between the tabs of one storage name: the leader forwards the
 * server's events, messages, presence and data; followers ask it for their
 * subscriptions, syncs and publications. A tab that closed ignores everything
 * (its storage is closed: reading it would only raise `InvalidStateError`).
 */
import type { SyncgateClient } from "./client.js";
import { SyncgateError } from "./errors.js";
import type { TabMessage } from "./tabs.js";
import type { ClientEvents, Value } from "./types.js";

export class TabRelay {
  readonly #client: SyncgateClient;

  constructor(client: SyncgateClient) {
    this.#client = client;
  }

  receive(message: TabMessage): void {
    if (this.#client.closed) return;
    this.#handle(message).catch((e: unknown) => {
      if (this.#client.closed) return;
      const error = new SyncgateError("internal", `tab message: ${String(e)}`);
      this.#client.events.emit("error", { message: error.message, error });
    });
  }

  /** Leader: tells the other tabs about a connection event (errors travel as plain data). */
  broadcast<K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]): void {
    if (event === "error") {
      const e = payload as ClientEvents["error"];
      const plain = { ...e, error: { code: e.error.code, message: e.error.message, context: e.error.context } };
      this.#client.tabs.post({ t: "event", name: event, payload: plain });
    } else {
      this.#client.tabs.post({ t: "event", name: event, payload });
    }
  }

  dispatch(topic: string, data: Value, from: string): void {
    for (const handler of this.#client.handlers.get(topic) ?? []) {
      try {
        handler(data, from);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  async #handle(message: TabMessage): Promise<void> {
    const client = this.#client;
    const leading = client.connector !== null;
    switch (message.t) {
      case "outbox":
        await client.ready;
        client.replica.addOps(await client.storage.loadOutbox());
        for (const name of client.statuses.collections.keys()) client.events.emit("change", { collection: name, keys: [] });
        client.connector?.wake();
        return;
      case "data":
        if (leading) return;
        await client.ready;
        for (const name of message.collections) {
          const saved = await client.storage.loadCollection(name);
          client.replica.loadCollection(name, saved.records, saved.cursor, Date.now());
        }
        client.replica.clock.observe({ ...message.clock, node: "" }, Number.MAX_SAFE_INTEGER);
        client.replica.removeOps(message.settled);
        client.replica.addOps(await client.storage.loadOutbox());
        client.replica.removeOps(message.settled);
        for (const name of message.collections) client.events.emit("change", { collection: name, keys: [] });
        return;
      case "event": {
        if (leading) return;
        let payload = message.payload;
        if (message.name === "error") {
          const e = payload as { message: string; error: { code: string; message: string; context: object } };
          payload = { ...e, error: new SyncgateError(e.error.code, e.error.message, e.error.context) };
        }
        if (message.name === "connected") client.identity = (payload as ClientEvents["connected"]).sub;
        client.applyEvent(message.name as keyof ClientEvents, payload as never);
        return;
      }
      case "state":
        if (leading) return;
        client.connectionState = message.state;
        client.identity = message.sub;
        if (message.known) client.statuses.learn(message.known);
        client.events.emit("state", { state: message.state, sub: message.sub });
        return;
      case "hello":
        // A tab (re)loaded: it learns the connection's state, and the leader what it needs.
        if (leading) client.tabs.post({ t: "state", state: client.connectionState, sub: client.identity, known: client.statuses.snapshot() });
        return;
      case "sub":
        client.want(client.topicTabs, message.tab, message.topic, { presence: message.presence, info: message.info });
        // A tab present where the connection already is: it gets the list now, not at the next join.
        if (leading && message.presence) {
          const members = client.presences.members(message.topic);
          if (members) client.tabs.post({ t: "presence", topic: message.topic, change: { reset: members } });
        }
        return;
      case "unsub":
        client.want(client.topicTabs, message.tab, message.topic, undefined);
        return;
      case "sync":
        client.want(client.syncTabs, message.tab, message.name, true);
        return;
      case "unsync":
        client.want(client.syncTabs, message.tab, message.name, undefined);
        return;
      case "msg":
        this.dispatch(message.topic, message.data, message.from);
        return;
      case "presence":
        if (!leading) client.applyPresence(message.topic, message.change);
        return;
      case "pub":
        if (!client.connector) return;
        client.connector.publish(message.topic, message.data).then(
          () => client.tabs.post({ t: "pubResult", tab: message.tab, req: message.req, ok: true }),
          (e: Error & { code?: string }) => {
            const answer: TabMessage = { t: "pubResult", tab: message.tab, req: message.req, ok: false, message: e.message };
            if (e.code !== undefined) answer.code = e.code;
            client.tabs.post(answer);
          },
        );
        return;
      case "pubResult": {
        if (message.tab !== client.tabId) return;
        const pending = client.publishes.get(message.req);
        client.publishes.delete(message.req);
        if (message.ok) pending?.resolve();
        else pending?.reject(new SyncgateError(message.code ?? "refused", message.message ?? "refused"));
        return;
      }
      case "leader": {
        // A new leader: tell it what this tab needs.
        for (const name of client.statuses.collections.keys()) client.tabs.post({ t: "sync", tab: client.tabId, name });
        for (const [topic, tabs] of client.topicTabs) {
          const want = tabs.get(client.tabId);
          if (want) client.postWant(topic, want);
        }
        return;
      }
    }
  }
}
