// Bundles the test page (and its client) for the browser with esbuild.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../../", import.meta.url));
await build({
  entryPoints: [`${root}test/browser/page.ts`],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  outfile: `${root}build/browser/page.js`,
  logLevel: "warning",
});
