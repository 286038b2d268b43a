// Writes man/dwcp.1 from the command table (cli/commands.ts); with --check, exits 1 when the
// committed page is stale (npm run check runs it).
//   npx tsx scripts/man.ts [--check]
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { manPage } from "../cli/man.js";
import { packageVersion } from "../cli/preflight.js";

const file = join(import.meta.dirname, "..", "man", "dwcp.1");
const page = manPage(packageVersion());
if (process.argv.includes("--check")) {
  let current = "";
  try {
    current = readFileSync(file, "utf8");
  } catch {
    // missing: stale
  }
  if (current !== page) {
    process.stderr.write("man/dwcp.1 is stale: run `npm run man` and commit it\n");
    process.exit(1);
  }
} else {
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(file, page);
}
