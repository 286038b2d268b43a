// vitest globalSetup of the integration and chaos tiers: the processes they start (bin/dwcp.mjs,
// the services of an embedded stack) run the compiled files in dist/, so those are rebuilt first
// when a source is newer than the last build. `npm ci` builds them; this keeps them current
// while the sources change.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "../..");
const BUILT = join(root, "dist", ".tsbuildinfo");

function newestSourceMs(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === "node_modules" || e.name === "build" || e.name === "json") continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSourceMs(p));
    else if (/\.(ts|mjs)$/.test(e.name) && !e.name.endsWith(".spec.ts")) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

export function distIsStale(): boolean {
  if (!existsSync(BUILT)) return true;
  const built = statSync(BUILT).mtimeMs;
  return ["services", "cli", "schemas", "native"].some((d) => newestSourceMs(join(root, d)) > built);
}

export default function setup(): void {
  if (!distIsStale()) return;
  const r = spawnSync(process.execPath, [join(root, "scripts", "build.mjs")], { stdio: "inherit" });
  if (r.status !== 0) throw new Error("npm run build failed: the tests' processes would run stale code");
}
