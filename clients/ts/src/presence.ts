/**
 * Presence on a topic: who else is here (one entry per connection), kept
 * from the server's PRESENCE_STATE and PRESENCE_JOIN / PRESENCE_LEAVE. The
 * leader tab's connection announces it; after a reconnect it subscribes with
 * presence again and the list is fetched anew, so nobody has to re-announce.
 */
import { Emitter } from "./emitter.js";
import type { PresenceMember, Value } from "./types.js";

export type PresenceChange = { reset: PresenceMember[] } | { join: PresenceMember } | { leave: PresenceMember };

export interface PresenceEvents {
  join: PresenceMember;
  leave: PresenceMember;
  /** The member list changed (any way). */
  change: PresenceMember[];
}

/** The members of one topic, as every handle on it in this tab sees them. */
export class PresenceState {
  readonly #members = new Map<number, PresenceMember>();
  #list: PresenceMember[] = [];
  readonly events = new Emitter<PresenceEvents>();

  apply(change: PresenceChange): void {
    if ("reset" in change) {
      const before = new Map(this.#members);
      this.#members.clear();
      for (const m of change.reset) this.#members.set(m.connId, m);
      for (const [id, m] of before) if (!this.#members.has(id)) this.events.emit("leave", m);
      for (const [id, m] of this.#members) if (!before.has(id)) this.events.emit("join", m);
    } else if ("join" in change) {
      this.#members.set(change.join.connId, change.join);
      this.events.emit("join", change.join);
    } else {
      if (!this.#members.delete(change.leave.connId)) return;
      this.events.emit("leave", change.leave);
    }
    this.#list = [...this.#members.values()].sort((a, b) => a.connId - b.connId);
    this.events.emit("change", this.#list);
  }

  /** The members in `connId` order; the same array until the list changes. */
  current(): PresenceMember[] {
    return this.#list;
  }
}

/** A handle on a topic's presence: this connection is present while the handle is open. */
export class Presence {
  #closed = false;

  readonly #state: PresenceState;
  readonly #release: () => void;

  constructor(
    readonly topic: string,
    state: PresenceState,
    release: () => void,
  ) {
    this.#state = state;
    this.#release = release;
  }

  /** Everyone present, this connection included, in `connId` order. */
  members(): PresenceMember[] {
    return this.#state.current();
  }

  on<K extends keyof PresenceEvents>(event: K, listener: (payload: PresenceEvents[K]) => void): () => void {
    return this.#state.events.on(event, listener);
  }

  /** Leaves the topic (the others get PRESENCE_LEAVE once the last handle of this client closes). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#release();
  }
}

/**
 * Presence as one tab knows it: the handles this tab holds (and the `info`
 * they announce), and the member list of every topic the connection is
 * present on (every tab hears the leader's presence changes), so a handle
 * opened on a topic another tab is already present on starts with the list.
 */
export class PresenceBook {
  readonly #held = new Map<string, { state: PresenceState; handles: number; info: Value | undefined }>();
  readonly #seen = new Map<string, PresenceState>();

  /** Opens a handle; `release` is called when it closes and was the last on the topic. */
  open(topic: string, info: Value | undefined, released: () => void): Presence {
    let entry = this.#held.get(topic);
    if (!entry) {
      entry = { state: new PresenceState(), handles: 0, info: undefined };
      this.#held.set(topic, entry);
      const seen = this.#seen.get(topic);
      if (seen) entry.state.apply({ reset: seen.current() });
    }
    entry.handles++;
    if (info !== undefined) entry.info = info;
    const held = entry;
    return new Presence(topic, entry.state, () => {
      if (--held.handles > 0) return;
      this.#held.delete(topic);
      released();
    });
  }

  /** What this tab wants announced on `topic`, or undefined when it holds no handle there. */
  wanted(topic: string): { info: Value | undefined } | undefined {
    const entry = this.#held.get(topic);
    return entry && { info: entry.info };
  }

  apply(topic: string, change: PresenceChange): void {
    let seen = this.#seen.get(topic);
    if (!seen) this.#seen.set(topic, (seen = new PresenceState()));
    seen.apply(change);
    this.#held.get(topic)?.state.apply(change);
  }

  /** The members known on `topic` (for a tab that just asked to be present there). */
  members(topic: string): PresenceMember[] | undefined {
    return this.#seen.get(topic)?.current();
  }

  /** No tab is present on `topic` any more. */
  forget(topic: string): void {
    this.#seen.delete(topic);
  }
}
