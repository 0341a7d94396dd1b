// Runs the micro-benchmark (a wasm32-wasip1 command module) in this Node's V8 via node:wasi.
//   node bench/micro/run.mjs [path.wasm] [rounds] [ms] [filter]
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv, execArgv, versions } from "node:process";

const path = argv[2] ?? new URL("./target/wasm32-wasip1/release/oauth-edge-micro.wasm", import.meta.url).pathname;
const wasi = new WASI({ version: "preview1", args: ["micro", ...argv.slice(3)], env: {} });
const module = await WebAssembly.compile(await readFile(path));
// The module's own proxy-wasm callbacks (src/envoy.rs, for `make micro-envoy`) are never called
// here, so their host imports are stubs.
const imports = wasi.getImportObject();
for (const { module: m, name, kind } of WebAssembly.Module.imports(module)) {
  if (m !== "wasi_snapshot_preview1" && kind === "function") {
    imports[m] ??= {};
    imports[m][name] = () => { throw new Error(`${m}.${name} is not available in the micro-benchmark`); };
  }
}
const instance = await WebAssembly.instantiate(module, imports);
const flags = execArgv.filter((f) => f !== "--no-warnings").join(" ");
console.log(`Node ${versions.node}, V8 ${versions.v8}${flags ? ` (${flags})` : ""}, ${path}`);
wasi.start({ exports: { memory: instance.exports.memory, _start: instance.exports._start } });
