// The settings table (services/common/settings.ts), and so docs/configuration.md made from it,
// declares every DWCP_* variable the product's code reads (services, cli, native, schemas, bin),
// and nothing it does not read.
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { CONFIG_VARIABLE, SETTINGS } from "#common/settings.js";

const ROOT = resolve(import.meta.dirname, "../..");

/** DWCP_ names that are not variables: stream names and prefixes, a warning code, a doc example. */
const NOT_VARIABLES = new Set(["DWCP_CMD", "DWCP_EVT", "DWCP_SUMMARY", "DWCP_NATIVE_FALLBACK", "DWCP_X"]);

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => /\.(ts|mjs)$/.test(f) && !f.endsWith(".spec.ts") && !f.startsWith("build/"))
    .map((f) => join(ROOT, dir, f));
}

function namesIn(text: string): Set<string> {
  return new Set(
    [...text.matchAll(/\bDWCP_[A-Z0-9_]*[A-Z0-9]\b/g)].map((m) => m[0]).filter((n) => !NOT_VARIABLES.has(n)),
  );
}

describe("the settings table", () => {
  it("declares every DWCP_* variable the code reads, and the docs list them", () => {
    const inCode = new Set<string>();
    for (const file of ["services", "cli", "native", "schemas", "bin"].flatMap(sources))
      for (const n of namesIn(readFileSync(file, "utf8"))) inCode.add(n);
    const declared = new Set<string>([...SETTINGS.map((s) => s.env), CONFIG_VARIABLE]);
    expect(inCode.size).toBeGreaterThan(20);
    expect([...inCode].filter((n) => !declared.has(n)).sort(), "read by the code, not declared").toEqual([]);
    expect([...declared].filter((n) => !inCode.has(n)).sort(), "declared, read nowhere").toEqual([]);
    const docs = readFileSync(join(ROOT, "docs", "configuration.md"), "utf8");
    const rows = new Set([...docs.matchAll(/^\| `[a-z_]+` \| `(DWCP_[A-Z0-9_]+)` \|/gm)].map((m) => m[1] ?? ""));
    expect([...rows].sort()).toEqual(SETTINGS.map((s) => s.env).sort());
    expect(docs).toContain(`$${CONFIG_VARIABLE}`);
  });
});
