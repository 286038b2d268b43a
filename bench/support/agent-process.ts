import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { createInterface } from "node:readline";

const ENTRY = resolve(import.meta.dirname, "../../services/replication/src/agent-entry.ts");

export interface AgentProcess {
  child: ChildProcess;
  port: number;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts the replication agent as a real process and resolves once it logs "listening". Used
 * by the benches and the replication tests (benches import nothing from test/).
 */
/**
 * `env` goes over the inherited environment; default DWCP_DATA_PLAINTEXT=on (the link's framing
 * and recovery are under test, not its TLS: pass DWCP_TLS_* for that).
 */
export async function spawnAgent(
  root: string,
  secret: string,
  port = 0,
  env: NodeJS.ProcessEnv = { DWCP_DATA_PLAINTEXT: "on" },
): Promise<AgentProcess> {
  const extra = process.env["DWCP_AGENT_NODE_ARGS"]?.split(" ").filter(Boolean) ?? []; // e.g. --cpu-prof
  const child = spawn(
    process.execPath,
    [...extra, "--import", "tsx", ENTRY, "--root", root, "--listen", `127.0.0.1:${port}`],
    {
      env: { ...process.env, ...env, DWCP_SECRET: secret },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const lines = createInterface({ input: child.stdout });
  const listening = await new Promise<number>((resolvePort, reject) => {
    child.once("exit", (code) => reject(new Error(`replication agent exited (${code}) before listening`)));
    lines.on("line", (l) => {
      try {
        const j = JSON.parse(l) as { msg?: string; port?: number };
        if (j.msg === "listening" && j.port) resolvePort(j.port);
      } catch {
        /* not a log line */
      }
    });
  });
  return {
    child,
    port: listening,
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
