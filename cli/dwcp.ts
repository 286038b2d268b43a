#!/usr/bin/env node
// The dwcp command (package.json "bin", compiled to dist/cli/dwcp.js). Help, version, completion
// and every usage error are answered from the command table before anything else loads; a
// command's own module (and the services and native addon it needs) is imported only to run it.
import { UsageError } from "./args.js";
import { preflight } from "./preflight.js";

const argv = process.argv.slice(2);
// Movers run checksums, reads, writes and sendfile on the libuv pool; the default 4 threads would
// let one slow peer stall the rest. Must be set before the pool starts.
if (["mover", "replication-agent", "replication-service"].includes(argv[0] ?? "") && !process.env["UV_THREADPOOL_SIZE"])
  process.env["UV_THREADPOOL_SIZE"] = "16";

async function run(): Promise<number> {
  try {
    const p = preflight(argv);
    if (p.done) {
      process.stdout.write(p.text.endsWith("\n") ? p.text : `${p.text}\n`);
      return 0;
    }
    const { main } = await import("./main.js");
    return await main([p.cmd.name, ...p.argv], { connectTimeoutMs: p.connectTimeoutMs });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`dwcp: ${err.message}\n`);
    return 2;
  }
}

process.exitCode = await run();
