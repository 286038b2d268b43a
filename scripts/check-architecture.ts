// `npm run check` step: domain/ stays pure transitively. ESLint's no-restricted-imports sees a
// file's own imports only; this walks every runtime import from each services/*/src/domain/ file
// (relative paths and package.json "imports" aliases; `import type` loads nothing and is not
// followed) and fails listing each chain that reaches NATS, pino, node:fs, node:net,
// node:child_process or node:worker_threads. Run: npx tsx scripts/check-architecture.ts
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { impureChains, isDomainFile, resolveImport, runtimeImports, type ImportAliases } from "./architecture.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

function filesUnder(dir: string): string[] {
  if (!existsSync(join(ROOT, dir))) return [];
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" }).map((f) => `${dir}/${f}`);
}

function main(): number {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { imports?: ImportAliases };
  const aliases = pkg.imports ?? {};
  const exists = (p: string): boolean => existsSync(join(ROOT, p));
  const roots = filesUnder("services").filter(isDomainFile).sort();
  const graph = new Map<string, string[]>();
  const unresolved: string[] = [];
  const pending = [...roots];
  while (pending.length > 0) {
    const file = pending.pop() as string;
    if (graph.has(file)) continue;
    const edges: string[] = [];
    for (const spec of runtimeImports(file, readFileSync(join(ROOT, file), "utf8"))) {
      const target = resolveImport(file, spec, aliases, exists);
      if (target === undefined) unresolved.push(`${file}: cannot resolve "${spec}"`);
      else {
        edges.push(target);
        if (/\.m?ts$/.test(target) && !graph.has(target)) pending.push(target);
      }
    }
    graph.set(file, edges);
  }
  const chains = impureChains(graph, roots);
  for (const line of unresolved) process.stderr.write(`${line}\n`);
  for (const chain of chains) process.stderr.write(`domain/ is not pure: ${chain.join(" -> ")}\n`);
  if (unresolved.length > 0 || chains.length > 0) return 1;
  const where = relative(process.cwd(), ROOT) || ".";
  process.stdout.write(`architecture: ${roots.length} domain files in ${where} reach no I/O module\n`);
  return 0;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) process.exitCode = main();
