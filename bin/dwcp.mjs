#!/usr/bin/env node
// The dwcp command. TypeScript runs through tsx's loader: no build step between `npm ci` and use.
import { register } from "tsx/esm/api";

// Movers run checksums, reads, writes and sendfile on the libuv pool; the default 4 threads would
// let one slow peer stall the rest. Must be set before the pool starts.
if (["mover", "replication-agent", "replication-service"].includes(process.argv[2]) && !process.env.UV_THREADPOOL_SIZE)
  process.env.UV_THREADPOOL_SIZE = "16";
register();
const { main } = await import("../cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
