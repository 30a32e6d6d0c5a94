// A local-first to-do list: writes apply at once (even offline), are saved in
// IndexedDB, sync through syncgate, and a write the server refuses is rolled back.
import { createRoot } from "react-dom/client";
import { useEffect, useState } from "react";
import { SyncgateClient } from "@syncgate/client";
import { SyncgateProvider, useCollection, useConnection, useSyncgate } from "@syncgate/client/react";

const user = new URLSearchParams(location.search).get("user") ?? "alice";
const client = new SyncgateClient({
  url: window.SYNCGATE_URL,
  // The replica is stored per user: one browser profile, several users, no mix-up.
  user,
  // The dev server mints short-lived tokens; a real app asks its own API.
  getToken: async () => {
    const response = await fetch(`/token?user=${encodeURIComponent(user)}`);
    return response.ok ? response.text() : null;
  },
});
client.connect();

function Status() {
  const { state, sub, pending } = useConnection();
  const online = state === "connected";
  return (
    <header>
      <strong>{sub ?? user}'s to-dos</strong>
      <span className={`badge ${online ? "online" : "offline"}`}>{online ? "online" : state === "connecting" ? "connecting…" : "offline"}</span>
      <span className="badge">{pending} pending</span>
    </header>
  );
}

/** A collection handle held while the component is mounted (for writes; `useCollection` reads). */
function useHandle(name) {
  const client = useSyncgate();
  const [handle, setHandle] = useState(null);
  useEffect(() => {
    const h = client.collection(name);
    setHandle(h);
    return () => h.close();
  }, [client, name]);
  return handle;
}

function Todos() {
  const todos = useCollection(`todos/${user}`);
  const [title, setTitle] = useState("");
  const list = useHandle(`todos/${user}`);
  const add = (event) => {
    event.preventDefault();
    if (title.trim() && list) void list.set(`t${Date.now()}`, { title: title.trim(), done: false });
    setTitle("");
  };
  return (
    <>
      <form onSubmit={add}>
        <input type="text" value={title} onChange={(e) => setTitle(e.target.value)} placeholder="What needs doing?" />
        <button>Add</button>
      </form>
      <ul>
        {todos.map(([key, todo]) => (
          <li key={key} className={todo.done ? "done" : ""}>
            <input type="checkbox" checked={todo.done} onChange={() => void list?.set(key, { ...todo, done: !todo.done })} />
            <span>{todo.title}</span>
            <button onClick={() => void list?.delete(key)}>✕</button>
          </li>
        ))}
      </ul>
    </>
  );
}

function Board() {
  const board = useCollection("board/team");
  const boardHandle = useHandle("board/team");
  const [refused, setRefused] = useState(null);
  const client = useSyncgate();
  useEffect(
    () =>
      client.on("opSettled", (e) => {
        if (!e.ok) setRefused(`The server refused "${e.key}" (${e.code}) and it was rolled back.`);
      }),
    [client],
  );
  return (
    <>
      <h2>Team board (read-only unless you are a lead)</h2>
      {refused && <div className="note">{refused}</div>}
      <ul>
        {board.map(([key, value]) => (
          <li key={key}><span>{String(value)}</span></li>
        ))}
      </ul>
      <button onClick={() => void boardHandle?.set("motto", `${user} was here`)}>Try to write the board</button>
    </>
  );
}

createRoot(document.getElementById("app")).render(
  <SyncgateProvider client={client}>
    <Status />
    <Todos />
    <Board />
  </SyncgateProvider>,
);
