// `node --import tsx services/replication/src/agent-entry.ts --root DIR --listen HOST:PORT`: the
// replication agent as a process, until the CLI has a `replication-agent` command.
import { parseArgs } from "node:util";
import { runReplicationAgent } from "./main.js";

// Reads, writes, fsyncs and BLAKE3 run on the libuv pool; 4 threads would serialise them.
process.env["UV_THREADPOOL_SIZE"] ??= "16";
const { values } = parseArgs({ options: { root: { type: "string" }, listen: { type: "string" } }, strict: true });
await runReplicationAgent(values);
