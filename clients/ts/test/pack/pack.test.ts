// The package as users install it: `npm pack` (which runs `prepare`, so no manual
// build), installed into a fresh app next to React, and a hook rendered from it.
// One React: the tarball carries none, and React is only a peer.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const npm = (args: string[], cwd: string) => execFileSync("npm", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

test("the packed tarball installs into a fresh React app and its hooks render", () => {
  const out = mkdtempSync(join(tmpdir(), "sg-pack-"));
  const packed = JSON.parse(npm(["pack", "--json", "--pack-destination", out], root)) as { filename: string; files: { path: string }[] }[];
  const files = packed[0]!.files.map((f) => f.path);
  assert.ok(files.includes("dist/index.js") && files.includes("dist/react.js") && files.includes("dist/e2e/index.js"), "built by prepare");
  assert.ok(!files.some((f) => f.includes("node_modules")), "no dependency copied in");
  const app = mkdtempSync(join(tmpdir(), "sg-app-"));
  const react = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { devDependencies: Record<string, string> }).devDependencies.react!;
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "fresh-app", private: true, type: "module" }));
  npm(["install", "--no-audit", "--no-fund", "--prefer-offline", join(out, packed[0]!.filename), `react@${react}`, `react-dom@${react}`], app);
  assert.ok(!existsSync(join(app, "node_modules/@syncgate/client/node_modules/react")), "React is a peer: one copy");
  assert.match(readFileSync(join(app, "node_modules/@syncgate/client/dist/react.js"), "utf8"), /^"use client";/);
  writeFileSync(
    join(app, "render.mjs"),
    `import { createElement } from "react";
import { renderToString } from "react-dom/server";
import { SyncgateClient, SyncgateError } from "@syncgate/client";
import { SyncgateProvider, useCollection, useConnection } from "@syncgate/client/react";
import { Encryption, Keyring, argon2id } from "@syncgate/client/e2e";
const keyring = new Keyring();
keyring.createSpace("todos");
const client = new SyncgateClient({ url: "ws://127.0.0.1:1/ws", storage: "memory", encryption: new Encryption(keyring) });
const kek = await argon2id(new TextEncoder().encode("pw"), new Uint8Array(16), { m: 64, t: 1, p: 1 });
function View() {
  const todos = useCollection("todos");
  const { state } = useConnection();
  return createElement("p", null, state + ":" + todos.length + ":" + typeof SyncgateError + ":" + kek.length);
}
console.log(renderToString(createElement(SyncgateProvider, { client }, createElement(View))));
await client.close();
`,
  );
  assert.equal(execFileSync("node", ["render.mjs"], { cwd: app, encoding: "utf8" }).trim(), "<p>idle:0:function:32</p>");
});
