// The pure core of scripts/check-architecture.ts: given the import graph, which chains lead from a
// domain/ file to a module that domain/ must not reach (NATS, logging, file system, sockets,
// processes, threads), however many helpers lie in between. No I/O here: the script reads files.
import { posix } from "node:path";
import ts from "typescript";

/** Module id -> the modules it loads at runtime: repository paths for files, specifiers else. */
export type ImportGraph = ReadonlyMap<string, readonly string[]>;

const IMPURE_BUILTINS = new Set(["fs", "fs/promises", "net", "child_process", "worker_threads"]);

/** A module that domain/ must not load, directly or through anything it imports. */
export function isImpure(specifier: string): boolean {
  if (specifier.startsWith("@nats-io/") || specifier === "pino" || specifier.startsWith("pino/")) return true;
  return IMPURE_BUILTINS.has(specifier.replace(/^node:/, ""));
}

/** A file the purity rule starts from: product code under services/<svc>/src/domain/. */
export function isDomainFile(path: string): boolean {
  return /^services\/[^/]+\/src\/domain\/.+\.ts$/.test(path) && !/\.(spec|d)\.ts$/.test(path);
}

/**
 * For every root and every impure module it reaches, the shortest chain of imports from one to
 * the other (root first). Sorted, so the report is stable.
 */
export function impureChains(graph: ImportGraph, roots: Iterable<string>): string[][] {
  const chains: string[][] = [];
  for (const root of roots) {
    const parent = new Map<string, string | undefined>([[root, undefined]]);
    const queue = [root];
    for (let i = 0; i < queue.length; i++) {
      const node = queue[i] as string;
      for (const next of graph.get(node) ?? []) {
        if (parent.has(next)) continue;
        parent.set(next, node);
        if (isImpure(next)) chains.push(chainTo(next, parent));
        else queue.push(next);
      }
    }
  }
  return chains.sort((a, b) => a.join(" ").localeCompare(b.join(" ")));
}

function chainTo(node: string, parent: ReadonlyMap<string, string | undefined>): string[] {
  const chain: string[] = [];
  for (let at: string | undefined = node; at !== undefined; at = parent.get(at)) chain.unshift(at);
  return chain;
}

/** package.json "imports": exact keys ("#mover") and one-star patterns ("#common/*"). */
export type ImportAliases = Readonly<Record<string, string>>;

/**
 * Where `specifier`, imported by the repository file `from`, leads: a repository path (with the
 * `.js` of a TypeScript source mapped back to `.ts` when `exists` says so), or the specifier
 * itself for a package or builtin. undefined: a relative or aliased path that names no file.
 */
export function resolveImport(
  from: string,
  specifier: string,
  aliases: ImportAliases,
  exists: (path: string) => boolean,
): string | undefined {
  let target: string | undefined;
  if (specifier.startsWith("./") || specifier.startsWith("../")) {
    target = posix.join(posix.dirname(from), specifier);
  } else if (specifier.startsWith("#")) {
    const mapped = aliasTarget(specifier, aliases);
    if (mapped === undefined) return undefined;
    target = posix.normalize(mapped);
  } else {
    return specifier;
  }
  const candidates = [target.replace(/\.js$/, ".ts"), target.replace(/\.mjs$/, ".mts"), target];
  return candidates.find(exists);
}

function aliasTarget(specifier: string, aliases: ImportAliases): string | undefined {
  const exact = aliases[specifier];
  if (exact !== undefined) return exact;
  for (const [key, value] of Object.entries(aliases)) {
    const star = key.indexOf("*");
    if (star < 0) continue;
    const [prefix, suffix] = [key.slice(0, star), key.slice(star + 1)];
    if (specifier.startsWith(prefix) && specifier.endsWith(suffix) && specifier.length >= key.length - 1) {
      return value.replace("*", specifier.slice(prefix.length, specifier.length - suffix.length));
    }
  }
  return undefined;
}

/**
 * The specifiers of the modules a TypeScript source loads at runtime: imports and re-exports,
 * except `import type`/`export type` (erased), and import() calls with a literal specifier.
 */
export function runtimeImports(path: string, text: string): string[] {
  const source = ts.createSourceFile(path, text, ts.ScriptTarget.ES2022, false, ts.ScriptKind.TS);
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && !node.importClause?.isTypeOnly) {
      if (ts.isStringLiteral(node.moduleSpecifier)) found.push(node.moduleSpecifier.text);
    } else if (ts.isExportDeclaration(node) && !node.isTypeOnly && node.moduleSpecifier) {
      if (ts.isStringLiteral(node.moduleSpecifier)) found.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [arg] = node.arguments;
      if (arg !== undefined && ts.isStringLiteralLike(arg)) found.push(arg.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}
