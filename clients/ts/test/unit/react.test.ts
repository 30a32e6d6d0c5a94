// The React binding rendered on a server (as Next.js does): every hook returns its
// empty, not-yet-synced state instead of throwing "Missing getServerSnapshot".
import assert from "node:assert/strict";
import { test } from "node:test";
import { createElement } from "react";
import { renderToString } from "react-dom/server";
import { SyncgateClient } from "../../src/client.js";
import { SyncgateProvider, useCollection, useConnection, usePresence, useRecord, useTopic } from "../../src/react.js";

function View() {
  const todos = useCollection<{ title: string }>("todos");
  const one = useRecord<string>("todos", "t1");
  const messages = useTopic("rooms/lobby");
  const members = usePresence("rooms/lobby");
  const { state, sub, pending } = useConnection();
  return createElement("p", null, JSON.stringify({ todos, one: one ?? null, messages, members, state, sub, pending }));
}

test("hooks render on the server with the empty state", async () => {
  const client = new SyncgateClient({ url: "ws://127.0.0.1:1/ws", storage: "memory" });
  const html = renderToString(createElement(SyncgateProvider, { client }, createElement(View)));
  assert.match(html, /\{&quot;todos&quot;:\[\],&quot;one&quot;:null,&quot;messages&quot;:\[\],&quot;members&quot;:\[\],&quot;state&quot;:&quot;idle&quot;,&quot;sub&quot;:null,&quot;pending&quot;:0\}/);
  await client.close();
});
