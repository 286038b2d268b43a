// The README's environment table lists every DWCP_* variable the product's code reads (services,
// cli, native, schemas, bin), and nothing it does not read.
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

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

describe("README environment table", () => {
  it("lists every DWCP_* variable the code reads", () => {
    const inCode = new Set<string>();
    for (const file of ["services", "cli", "native", "schemas", "bin"].flatMap(sources))
      for (const n of namesIn(readFileSync(file, "utf8"))) inCode.add(n);
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const section = readme.slice(
      readme.indexOf("## Environment"),
      readme.indexOf("\n## ", readme.indexOf("## Environment") + 5),
    );
    const rows = new Set([...section.matchAll(/^\| `(DWCP_[A-Z0-9_]+)` \|/gm)].map((m) => m[1] ?? ""));
    expect(inCode.size).toBeGreaterThan(20);
    expect([...inCode].filter((n) => !rows.has(n)).sort(), "read by the code, missing from the README").toEqual([]);
    expect([...rows].filter((n) => !inCode.has(n)).sort(), "in the README, read nowhere").toEqual([]);
  });
});
