import { rmSync } from "node:fs";
import { ledgerPath, RUN_MARKER, sweep } from "./procs.js";
import { serverInfo } from "./server-version.js";

/**
 * Runs once around the chaos project: names the run (workers inherit the environment) and, at
 * the end, kills whatever a crashed test left running and unmounts its tmpfs mounts.
 */
export function setup(): () => void {
  const id = `${process.pid}-${Date.now()}`;
  process.env[RUN_MARKER] = id;
  // One seed for the whole run (workers inherit it); every scenario derives its own from it.
  process.env["DWCP_CHAOS_SEED"] ||= String(Math.floor(Math.random() * 2 ** 32));
  const s = serverInfo();
  process.stderr.write(
    `chaos: nats-server ${s.version} (${s.bin}), DWCP_CHAOS_SEED=${process.env["DWCP_CHAOS_SEED"]}\n`,
  );
  return () => {
    const { killed, unmounted } = sweep(id);
    if (killed + unmounted > 0)
      process.stderr.write(`chaos: cleaned up ${killed} leftover processes and ${unmounted} mounts\n`);
    rmSync(ledgerPath(id), { force: true });
  };
}
