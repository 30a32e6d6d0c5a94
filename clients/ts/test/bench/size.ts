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
const kb = (n: number) => `${(n / 1024).toFixed(1)} KB`;
console.log(`core (with @msgpack/msgpack): ${kb(core.min)} minified, ${kb(core.gzip)} gzip`);
console.log(`react binding (without react and the core): ${kb(react.min)} minified, ${kb(react.gzip)} gzip`);
