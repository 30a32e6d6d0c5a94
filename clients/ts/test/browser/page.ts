// The page the browser tests load: one SyncgateClient, a list of records, and a handle for the tests.
import { SyncgateClient, type SyncgateClientOptions, type Value } from "../../src/index.js";

const params = new URLSearchParams(location.search);
const sub = params.get("sub") ?? "alice";
const collections = params.getAll("collection");
const options: SyncgateClientOptions = {
  url: params.get("ws") ?? "",
  name: params.get("name") ?? "app",
  backoff: { initialMs: 100, maxMs: 1000 },
};
if (params.get("mode") === "cookie") {
  options.credentials = "cookie";
} else {
  options.getToken = async () => {
    const response = await fetch(`/token?sub=${encodeURIComponent(sub)}`);
    return response.ok ? response.text() : null;
  };
}
const client = new SyncgateClient(options);
const events: { kind: string; payload: unknown; t: number }[] = [];
for (const kind of ["connected", "disconnected", "stopped", "opSettled", "opRetrying", "synced", "error", "leader"] as const) {
  client.on(kind, (payload) => events.push({ kind, payload, t: performance.now() }));
}
const startedAt = performance.now();

/** When the page first showed stored or synced records (the reload benchmark reads it). */
let firstRender: { t: number; records: number } | null = null;

function render(): void {
  if (firstRender === null) {
    const records = collections.reduce((n, name) => n + (handles.get(name)?.entries().length ?? 0), 0);
    if (records > 0) firstRender = { t: performance.now(), records };
  }
  // The benchmark measures the client, not the DOM.
  if (params.get("render") === "0") return;
  const list = document.getElementById("records")!;
  list.replaceChildren(
    ...collections.flatMap((name) =>
      handles
        .get(name)!
        .entries()
        .map(([key, value]) => {
          const li = document.createElement("li");
          li.textContent = `${name}/${key}=${JSON.stringify(value)}`;
          return li;
        }),
    ),
  );
  document.getElementById("state")!.textContent = client.state;
  document.getElementById("pending")!.textContent = String(client.pending);
}
const handles = new Map(collections.map((name) => [name, client.collection(name)]));
for (const handle of handles.values()) handle.subscribe(render);
const presenceTopic = params.get("presence");
const presence = presenceTopic === null ? null : client.presence(presenceTopic, { info: sub });
for (const kind of ["connected", "disconnected", "opSettled", "state"] as const) client.on(kind, render);
void client.ready.then(render);

(window as unknown as { sg: unknown }).sg = {
  client,
  events,
  set: (collection: string, key: string, value: Value) => (handles.get(collection) ?? client.collection(collection)).set(key, value),
  entries: (collection: string) => (handles.get(collection) ?? client.collection(collection)).entries(),
  members: () => presence?.members().map((m) => m.sub) ?? [],
  state: () => client.state,
  pending: () => client.pending,
  startedAt,
  firstRender: () => firstRender,
};
if (params.get("connect") !== "0") client.connect();
