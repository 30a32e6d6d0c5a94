// A React page for the browser tests: a view whose collection and topic the test
// switches, a late-mounted connection badge, and counters of what the hooks acquire.
import { createElement, useState } from "react";
import { createRoot } from "react-dom/client";
import { SyncgateClient, type Value } from "../../src/index.js";
import { SyncgateProvider, useCollection, useConnection, useTopic } from "../../src/react.js";

const params = new URLSearchParams(location.search);
const sub = params.get("sub") ?? "alice";
const client = new SyncgateClient({
  url: params.get("ws") ?? "",
  name: params.get("name") ?? "react",
  backoff: { initialMs: 100, maxMs: 1000 },
  getToken: async () => (await fetch(`/token?sub=${encodeURIComponent(sub)}`)).text(),
});
// How many handles and subscriptions the hooks take: a re-render must take none.
const counts = { collections: 0, topics: 0 };
const collection = client.collection.bind(client);
const subscribe = client.subscribe.bind(client);
client.collection = ((name: string) => (counts.collections++, collection(name))) as typeof client.collection;
client.subscribe = ((topic: string, handler: (data: Value, from: string) => void) => (counts.topics++, subscribe(topic, handler))) as typeof client.subscribe;

function Badge() {
  const { sub } = useConnection();
  return createElement("p", { id: "sub" }, sub ?? "none");
}

function View(props: { name: string; topic: string; tick: number; badge: boolean }) {
  const entries = useCollection(props.name);
  const messages = useTopic(props.topic);
  return createElement(
    "div",
    null,
    createElement("p", { id: "tick" }, String(props.tick)),
    createElement("ul", { id: "entries" }, ...entries.map(([k, v]) => createElement("li", { key: k }, `${k}=${JSON.stringify(v)}`))),
    createElement("ul", { id: "messages" }, ...messages.map((m, i) => createElement("li", { key: i }, JSON.stringify(m.data)))),
    props.badge ? createElement(Badge) : null,
  );
}

let setProps: (p: { name: string; topic: string; tick: number; badge: boolean }) => void = () => undefined;
function App() {
  const [props, set] = useState({ name: params.get("collection") ?? "rooms/a", topic: params.get("topic") ?? "rooms/ta", tick: 0, badge: false });
  setProps = set;
  return createElement(SyncgateProvider, { client }, createElement(View, props));
}
createRoot(document.getElementById("app")!).render(createElement(App));
client.connect();
(window as unknown as { rx: unknown }).rx = {
  client,
  counts,
  show: (p: { name: string; topic: string; tick: number; badge: boolean }) => setProps(p),
  state: () => client.state,
};
