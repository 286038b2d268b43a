#!/usr/bin/env node
// The dwcp command from a checkout: runs the compiled JavaScript in dist/ (`npm ci` builds it;
// after changing the sources, `npm run build`). The installed package's bin is dist/cli/dwcp.js.
import { existsSync } from "node:fs";

const entry = new URL("../dist/cli/dwcp.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("dwcp: not built (dist/cli/dwcp.js is missing): run `npm run build`\n");
  process.exit(1);
}
await import(entry.href);
