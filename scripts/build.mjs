#!/usr/bin/env node
// Compiles the TypeScript sources to dist/ with tsc (tsconfig.build.json), the JavaScript that the
// `dwcp` command and the services it starts run. Runs from `npm ci` (the "prepare" script) and
// `npm pack`; incremental, so a run after a small change takes seconds.
//   node scripts/build.mjs
// dist/package.json repeats the package's import aliases (#common/*, #migration, ...) relative to
// dist/, so compiled files resolve them to compiled files; the sources keep the root package.json's.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const dist = join(root, "dist");
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const r = spawnSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], { stdio: "inherit" });
if (r.status !== 0) {
  console.error("dwcp: the TypeScript build failed (tsc -p tsconfig.build.json)");
  process.exit(r.status ?? 1);
}
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
mkdirSync(dist, { recursive: true });
writeFileSync(
  join(dist, "package.json"),
  `${JSON.stringify({ type: "module", private: true, imports: pkg.imports }, null, 2)}\n`,
);
// Plain-JavaScript files the compiled code loads by path (worker threads).
for (const file of ["services/replication/src/infra/digest-worker.mjs"]) {
  mkdirSync(dirname(join(dist, file)), { recursive: true });
  copyFileSync(join(root, file), join(dist, file));
}
