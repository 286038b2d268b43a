import { fileURLToPath, pathToFileURL } from "node:url";
import { Linter } from "eslint";
import { describe, expect, it } from "vitest";
import { impureChains, isDomainFile, isImpure, resolveImport, runtimeImports } from "./architecture.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

describe("impureChains", () => {
  it("finds I/O reached from domain/ through helpers, by the shortest chain", () => {
    const graph = new Map<string, string[]>([
      ["services/r/src/domain/pack.ts", ["native/paths.ts", "services/r/src/domain/ids.ts"]],
      ["services/r/src/domain/ids.ts", ["native/paths.ts"]],
      ["native/paths.ts", ["native/loader.ts", "native/page-tree.ts"]],
      ["native/loader.ts", ["node:fs", "node:module"]],
      ["native/page-tree.ts", []],
    ]);
    expect(impureChains(graph, ["services/r/src/domain/pack.ts", "services/r/src/domain/ids.ts"])).toEqual([
      ["services/r/src/domain/ids.ts", "native/paths.ts", "native/loader.ts", "node:fs"],
      ["services/r/src/domain/pack.ts", "native/paths.ts", "native/loader.ts", "node:fs"],
    ]);
  });

  it("passes a domain that reaches only pure modules, and survives import cycles", () => {
    const graph = new Map<string, string[]>([
      ["services/c/src/domain/decide.ts", ["services/c/src/domain/state.ts", "zod", "#native/page-tree.js"]],
      ["services/c/src/domain/state.ts", ["services/c/src/domain/decide.ts", "node:crypto"]],
    ]);
    expect(impureChains(graph, ["services/c/src/domain/decide.ts"])).toEqual([]);
  });

  it("reports each impure module once per root", () => {
    const graph = new Map([["services/m/src/domain/a.ts", ["pino", "@nats-io/jetstream", "node:worker_threads"]]]);
    expect(impureChains(graph, ["services/m/src/domain/a.ts"]).map((c) => c.at(-1))).toEqual([
      "@nats-io/jetstream",
      "node:worker_threads",
      "pino",
    ]);
  });
});

describe("what counts", () => {
  it("names the modules domain/ must not reach", () => {
    const impure = ["@nats-io/kv", "pino", "fs", "node:fs/promises", "node:net", "child_process", "worker_threads"];
    expect(impure.filter(isImpure)).toEqual(impure);
    expect(["zod", "node:crypto", "node:path", "pinot", "#schemas/index.js"].filter(isImpure)).toEqual([]);
  });

  it("starts from product files under services/<svc>/src/domain/ only", () => {
    const files = [
      "services/mover/src/domain/paths.ts",
      "services/mover/src/domain/paths.unit.spec.ts",
      "services/mover/src/infra/volumes.ts",
      "services/common/domain/x.ts",
    ];
    expect(files.filter(isDomainFile)).toEqual(["services/mover/src/domain/paths.ts"]);
  });

  it("follows runtime imports, re-exports and import() but not type-only imports", () => {
    const text = [
      'import type { KV } from "@nats-io/kv";',
      'export type { Logger } from "pino";',
      'import { type Msg, ok } from "./a.js";',
      'import "./side-effect.js";',
      'export { b } from "./b.js";',
      'export * from "#schemas/index.js";',
      'const fs = await import("node:fs");',
    ].join("\n");
    expect(runtimeImports("x.ts", text)).toEqual([
      "./a.js",
      "./side-effect.js",
      "./b.js",
      "#schemas/index.js",
      "node:fs",
    ]);
  });
});

describe("resolveImport", () => {
  const files = new Set(["native/paths.ts", "services/mover/src/index.ts", "services/common/errors.ts", "x/y.mts"]);
  const exists = (p: string): boolean => files.has(p);
  const aliases = { "#mover": "./services/mover/src/index.js", "#common/*": "./services/common/*" };

  it("maps relative and aliased .js specifiers to the TypeScript source", () => {
    expect(resolveImport("services/r/src/domain/pack.ts", "../../../../native/paths.js", aliases, exists)).toBe(
      "native/paths.ts",
    );
    expect(resolveImport("cli/main.ts", "#mover", aliases, exists)).toBe("services/mover/src/index.ts");
    expect(resolveImport("cli/main.ts", "#common/errors.js", aliases, exists)).toBe("services/common/errors.ts");
    expect(resolveImport("x/a.ts", "./y.mjs", aliases, exists)).toBe("x/y.mts");
  });

  it("leaves packages as they are and says when a path names no file", () => {
    expect(resolveImport("cli/main.ts", "node:fs", aliases, exists)).toBe("node:fs");
    expect(resolveImport("cli/main.ts", "./gone.js", aliases, exists)).toBeUndefined();
    expect(resolveImport("cli/main.ts", "#nowhere", aliases, exists)).toBeUndefined();
  });
});

describe("the ESLint boundary rules", async () => {
  const config = (await import(pathToFileURL(`${ROOT}eslint.config.js`).href)) as { boundaries: Linter.Config[] };
  const linter = new Linter({ cwd: ROOT });
  const problems = (file: string, specifier: string): string[] =>
    linter
      .verify(`import { x } from "${specifier}";\nexport { x };\n`, [{ files: ["**/*.ts"] }, ...config.boundaries], {
        filename: `${ROOT}${file}`,
      })
      .map((m) => `${m.ruleId}: ${m.message}`);

  it("reports a path into another service, from outside or from another service", () => {
    expect(problems("cli/x.ts", "../services/mover/src/main.js")).toEqual([
      expect.stringMatching(/^no-restricted-imports: .*front door/),
    ]);
    expect(problems("services/common/x.ts", "../federation/src/index.js")).toHaveLength(1);
    expect(problems("services/mover/src/app/x.ts", "../../../federation/src/infra/fed-streams.js")).toHaveLength(1);
    expect(
      problems("services/mover/src/domain/x.ts", "../../../coordinator/src/domain/migration/state.js"),
    ).toHaveLength(1);
  });

  it("lets front doors, a service's own files, tests and benches through", () => {
    expect(problems("cli/x.ts", "#mover")).toEqual([]);
    expect(problems("services/mover/src/app/x.ts", "../infra/registry.js")).toEqual([]);
    expect(problems("services/coordinator/src/app/x.ts", "#common/remote-movers.js")).toEqual([]);
    expect(problems("test/x.int.spec.ts", "../services/mover/src/infra/volumes.js")).toEqual([]);
    expect(problems("services/mover/src/app/x.unit.spec.ts", "../../../federation/src/app/site.js")).toEqual([]);
    expect(problems("bench/x.ts", "../services/replication/src/app/sync.js")).toEqual([]);
  });

  it("admits native/ only through index.js and the pure page-tree.js", () => {
    expect(problems("services/mover/src/infra/x.ts", "#native/compress.js")).toHaveLength(1);
    expect(problems("cli/x.ts", "../native/paths.js")).toHaveLength(1);
    expect(problems("services/mover/src/infra/x.ts", "#native/index.js")).toEqual([]);
    expect(problems("services/mover/src/infra/data-channel/x.ts", "./native-frame-reader.js")).toEqual([]);
  });

  it("keeps domain/ pure, specs included", () => {
    for (const specifier of ["node:fs", "node:fs/promises", "@nats-io/jetstream", "pino", "node:worker_threads"]) {
      expect(problems("services/replication/src/domain/store/x.ts", specifier)).toHaveLength(1);
      expect(problems("services/replication/src/domain/store/x.unit.spec.ts", specifier)).toHaveLength(1);
    }
    expect(problems("services/replication/src/domain/store/x.ts", "#native/index.js")).toHaveLength(1);
    expect(problems("services/replication/src/domain/store/x.ts", "#native/page-tree.js")).toEqual([]);
  });
});
