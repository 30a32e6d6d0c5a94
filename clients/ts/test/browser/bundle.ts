// Bundles the test page (and its client) for the browser with esbuild.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../../", import.meta.url));
await build({
  entryPoints: { page: `${root}test/browser/page.ts`, "react-page": `${root}test/browser/react-page.ts`, "e2e-page": `${root}test/browser/e2e-page.ts` },
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  outdir: `${root}build/browser`,
  define: { "process.env.NODE_ENV": '"development"' },
  logLevel: "warning",
});
