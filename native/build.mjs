#!/usr/bin/env node
// Builds native/build/Release/dwcp_native.node with node-gyp. Runs from `npm ci` (the
// "install" script), so it never fails: if the build does not work, it prints one warning and
// exits 0, and native/index.ts falls back to TypeScript.
//   node native/build.mjs [--force]   (--force rebuilds even if up to date or DWCP_NATIVE=off)
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, realpathSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");
const output = join(here, "build", "Release", "dwcp_native.node");
const logFile = join(here, "build", "node-gyp.log");
const force = process.argv.includes("--force");

function warn(reason) {
  console.warn(`dwcp: native build failed, using the TypeScript fallback: ${reason}`);
}

function newestSourceMs() {
  const files = [join(here, "binding.gyp"), ...readdirSync(join(here, "src")).map((f) => join(here, "src", f))];
  return Math.max(...files.map((f) => statSync(f).mtimeMs));
}

function upToDate() {
  return existsSync(output) && statSync(output).mtimeMs > newestSourceMs();
}

// The project's node-gyp first, then the one bundled with npm.
function findNodeGyp() {
  const candidates = [join(root, "node_modules", ".bin", "node-gyp")];
  if (process.env.npm_execpath) {
    candidates.push(join(dirname(process.env.npm_execpath), "..", "node_modules", "node-gyp", "bin", "node-gyp.js"));
  }
  candidates.push(
    join(
      dirname(process.execPath),
      "..",
      "lib",
      "node_modules",
      "npm",
      "node_modules",
      "node-gyp",
      "bin",
      "node-gyp.js",
    ),
  );
  const found = candidates.find((c) => existsSync(c));
  return found === undefined ? undefined : realpathSync(found);
}

// Outside npm (no npm_config_nodedir), point node-gyp at the headers installed next to this
// node binary so it does not try to download them.
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const prefix = resolve(dirname(process.execPath), "..");
  return existsSync(join(prefix, "include", "node", "node_api.h")) ? [`--nodedir=${prefix}`] : [];
}

function firstError(log) {
  const lines = log.split("\n");
  const line = lines.find(
    (l) => /\berror\b/i.test(l) && !/gyp ERR! (stack|System|command|cwd|node -v|node-gyp -v|not ok)/.test(l),
  );
  return (line ?? lines.filter(Boolean).at(-1) ?? "unknown error").trim().slice(0, 300);
}

function build(gyp) {
  const args = [gyp, "rebuild", `--jobs=${availableParallelism()}`, ...nodedirArgs()];
  const r = spawnSync(process.execPath, args, { cwd: here, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  if (r.error) return r.error.message;
  mkdirSync(dirname(logFile), { recursive: true });
  writeFileSync(logFile, `${r.stdout}\n${r.stderr}`);
  if (r.status !== 0) return `${firstError(r.stderr)} (full log: native/build/node-gyp.log)`;
  try {
    createRequire(import.meta.url)(output);
  } catch (err) {
    return `built module does not load: ${err.message}`;
  }
  return undefined;
}

function main() {
  if (process.env.DWCP_NATIVE === "off" && !force) {
    console.log("dwcp: DWCP_NATIVE=off, skipping the native build");
    return;
  }
  if (!force && upToDate()) return;
  const gyp = findNodeGyp();
  if (gyp === undefined) {
    warn("node-gyp not found (neither in node_modules nor bundled with npm)");
    return;
  }
  const failure = build(gyp);
  if (failure !== undefined) warn(failure);
  else console.log(`dwcp: native module built: ${output}`);
}

try {
  main();
} catch (err) {
  warn(err instanceof Error ? err.message : String(err));
}
process.exitCode = 0;
