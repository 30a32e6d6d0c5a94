// Typed collections: `collection<T>()` and the hooks take the app's own value type
// (an interface works); a wrong shape is a compile error (checked by `npm run typecheck`).
import assert from "node:assert/strict";
import { test } from "node:test";
import { SyncgateClient } from "../../src/client.js";

interface Todo {
  title: string;
  done: boolean;
}

test("a typed collection reads and writes its own type", async () => {
  const client = new SyncgateClient({ url: "ws://127.0.0.1:1/ws", storage: "memory" });
  const todos = client.collection<Todo>("todos");
  await todos.set("t1", { title: "buy milk", done: false });
  const todo: Todo | undefined = todos.get("t1");
  const all: [string, Todo][] = todos.entries();
  assert.equal(todo?.title, "buy milk");
  assert.equal(all.length, 1);
  // @ts-expect-error a value of another shape does not compile
  await todos.set("t2", { title: 1 }).catch(() => undefined);
  todos.close();
  await client.close();
});
