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

/**
 * The exit code, and whether to exit at once (a client command: nothing it started may outlive
 * its answer; `up`, once its stack has stopped).
 */
async function run(): Promise<{ code: number; exitNow: boolean }> {
  try {
    const p = preflight(argv);
    if (p.done) {
      process.stdout.write(p.text.endsWith("\n") ? p.text : `${p.text}\n`);
      return { code: 0, exitNow: false };
    }
    const { main } = await import("./main.js");
    const code = await main([p.cmd.name, ...p.argv], {
      connectTimeoutMs: p.connectTimeoutMs,
      configFile: p.configFile,
      dataDir: p.dataDir,
    });
    // `up` has stopped its stack when it returns: a client of a server already gone must not
    // keep the process alive.
    return { code, exitNow: p.cmd.role !== undefined || p.cmd.name === "up" };
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`dwcp: ${err.message}\n`);
    return { code: 2, exitNow: false };
  }
}

const { code, exitNow } = await run();
process.exitCode = code;
// A connection attempt the client library still retries (a server that accepted and never
// answered) would keep the process alive after the command has answered. stdout and stderr are
// synchronous for files and pipes on Linux, so nothing written is lost.
if (exitNow) process.exit(code);
