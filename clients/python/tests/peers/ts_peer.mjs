// A TypeScript client (clients/ts, built) driven over stdin/stdout, one JSON
// object per line, for the Python tests' cross-client convergence check.
//   node ts_peer.mjs <clients/ts dir> <ws url> <token>
// Commands: {"cmd": "sync", "collection"} · {"cmd": "set", "collection", "key", "value"}
// · {"cmd": "get", "collection", "key"} · {"cmd": "state"} · {"cmd": "close"}.
// Every command is answered with one line; events go out as {"event": ...}.
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const [tsDir, url, token] = process.argv.slice(2);
const { SyncgateClient } = await import(pathToFileURL(join(tsDir, "build", "src", "index.js")).href);
const { default: WebSocket } = await import(pathToFileURL(join(tsDir, "node_modules", "ws", "wrapper.mjs")).href);

const out = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const client = new SyncgateClient({
  url,
  getToken: async () => token,
  storage: "memory",
  WebSocket,
  backoff: { initialMs: 50, maxMs: 300 },
});
for (const kind of ["connected", "disconnected", "synced", "opSettled", "stopped"]) {
  client.on(kind, (payload) => out({ event: kind, payload }));
}
client.connect();

const handle = async (command) => {
  switch (command.cmd) {
    case "sync":
      client.collection(command.collection);
      return { ok: true };
    case "set":
      return { ok: true, opId: await client.collection(command.collection).set(command.key, command.value) };
    case "get": {
      const value = client.collection(command.collection).get(command.key);
      return { ok: true, value: value === undefined ? null : value };
    }
    case "state":
      return { ok: true, state: client.state, pending: client.pending };
    case "close":
      await client.close();
      return { ok: true };
    default:
      return { ok: false, error: `unknown command ${command.cmd}` };
  }
};

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  let answer;
  try {
    answer = await handle(JSON.parse(line));
  } catch (e) {
    answer = { ok: false, error: String(e) };
  }
  out({ answer });
  if (answer.ok && JSON.parse(line).cmd === "close") break;
}
process.exit(0);
