// The client's size as an app ships it: minified, then gzipped; the core (with its
// MessagePack codec) and the React binding (without React and the core) separately.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const root = fileURLToPath(new URL("../../../", import.meta.url));

async function size(entry: string, external: string[]): Promise<{ min: number; gzip: number }> {
  const out = await build({
    entryPoints: [`${root}src/${entry}`],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    external,
    write: false,
  });
  const code = out.outputFiles[0]!.contents;
  return { min: code.length, gzip: gzipSync(code, { level: 9 }).length };
}

const core = await size("index.ts", []);
const react = await size("react.ts", ["react", "@msgpack/msgpack", "./client.js", "./codec.js"]);
// The e2e entry point, as an app that encrypts adds it to the core (which it shares).
const e2e = await size("e2e/index.ts", ["@msgpack/msgpack", "../codec.js", "../errors.js"]);
const kb = (n: number) => `${(n / 1024).toFixed(1)} KB`;
// Issue 25's budget: within 10 % of the first round (14.8 KB core, 0.8 KB React, gzip).
const budget = (n: number, limitKb: number) => (n <= limitKb * 1024 ? `within ${limitKb} KB` : `${n - Math.floor(limitKb * 1024)} B over ${limitKb} KB`);
console.log(`core (with @msgpack/msgpack): ${kb(core.min)} minified, ${kb(core.gzip)} gzip (${core.gzip} B, ${budget(core.gzip, 16.3)})`);
console.log(`react binding (without react and the core): ${kb(react.min)} minified, ${kb(react.gzip)} gzip (${react.gzip} B, ${budget(react.gzip, 0.9)})`);
console.log(`e2e entry (without the core; with hash-wasm's Argon2id and uqr): ${kb(e2e.min)} minified, ${kb(e2e.gzip)} gzip (${e2e.gzip} B)`);
