// Development server for the demo: bundles the app with esbuild, serves it, and
// mints short-lived tokens with the syncgate binary (`syncgate token`). A real
// app's backend mints tokens for its signed-in users instead.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = fileURLToPath(new URL(".", import.meta.url));
const root = fileURLToPath(new URL("../../", import.meta.url));
const port = Number(process.env.PORT ?? 5173);
const secret = process.env.SYNCGATE_JWT_SECRET ?? "demo-secret-change-me-0123456789abcdef";
const syncgateUrl = process.env.SYNCGATE_URL ?? "ws://127.0.0.1:8080/ws";
const bin = process.env.SYNCGATE_BIN ?? `${root}target/release/syncgate`;

const bundle = await build({
  entryPoints: [`${here}app.jsx`],
  bundle: true,
  format: "esm",
  jsx: "automatic",
  minify: true,
  write: false,
  // The client straight from its sources; its dependencies from this folder.
  // One React for the app and the binding.
  alias: {
    "@syncgate/client/react": `${root}clients/ts/src/react.ts`,
    "@syncgate/client": `${root}clients/ts/src/index.ts`,
    react: `${here}node_modules/react`,
  },
  nodePaths: [`${here}node_modules`],
});
const app = bundle.outputFiles[0].contents;
const html = readFileSync(`${here}index.html`, "utf8").replace(
  "</head>",
  `<script>window.SYNCGATE_URL = ${JSON.stringify(syncgateUrl)};</script></head>`,
);

createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://x");
  if (url.pathname === "/app.js") {
    res.setHeader("content-type", "text/javascript");
    return res.end(app);
  }
  if (url.pathname === "/token") {
    const user = url.searchParams.get("user") ?? "alice";
    const roles = user === "lead" ? ["--role", "user", "--role", "lead"] : ["--role", "user"];
    const args = ["token", "--secret", secret, "--sub", user, ...roles, "--ttl", "15m"];
    res.setHeader("content-type", "text/plain");
    return res.end(execFileSync(bin, args, { encoding: "utf8" }).trim());
  }
  res.setHeader("content-type", "text/html");
  res.end(html);
}).listen(port, "127.0.0.1", () => {
  console.log(`todo-web on http://127.0.0.1:${port}/?user=alice (syncgate at ${syncgateUrl})`);
});
