#!/usr/bin/env node
// The dwcp command. TypeScript runs through tsx's loader: no build step between `npm ci` and use.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
