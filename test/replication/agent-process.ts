// The replication tests start agents as the benches do: one helper, kept beside the benches.
export * from "../../bench/support/agent-process.js";
