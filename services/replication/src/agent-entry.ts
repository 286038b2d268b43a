// `node --import tsx services/replication/src/agent-entry.ts --root DIR --listen HOST:PORT`: the
// replication agent as a process, until the CLI has a `replication-agent` command.
import { parseArgs } from "node:util";
import { applyConfigFile, findConfigFile, readConfigFile } from "#common/config-file.js";
import { agentConfig } from "./config.js";
import { runReplicationAgent } from "./main.js";

const { values } = parseArgs({
  options: { root: { type: "string" }, listen: { type: "string" }, "plaintext-data": { type: "boolean" } },
  strict: true,
});
// dwcp.toml ($DWCP_CONFIG, else <data dir>/dwcp.toml) under the environment, as in the CLI.
const found = findConfigFile({ env: process.env });
applyConfigFile(found === undefined ? undefined : readConfigFile(found));
// libuv reads UV_THREADPOOL_SIZE when the pool first runs a task: set it before any file I/O.
process.env["UV_THREADPOOL_SIZE"] = String(agentConfig(values).threadPoolSize);
await runReplicationAgent(values);
