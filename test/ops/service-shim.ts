import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";

// A service manager for hosts without systemd as PID 1: ops/ansible's upgrade playbook runs
// `<dwcp_upgrade_service_command> stop|start <unit>` per host, and each host's command is a small
// script that asks this server, in the test process, to stop or start that host's unit.

export type ServiceAction = (host: string, verb: "start" | "stop", unit: string) => Promise<void>;

export interface ServiceShim {
  /** The command to give host `host` as dwcp_upgrade_service_command. */
  commandFor(host: string): string;
  close(): Promise<void>;
}

const CLIENT = `
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((" ".join(sys.argv[2:]) + "\\n").encode())
reply = s.makefile().readline().strip()
print(reply)
sys.exit(0 if reply == "ok" else 1)
`;

export async function startServiceShim(dir: string, act: ServiceAction): Promise<ServiceShim> {
  mkdirSync(dir, { recursive: true });
  const socketPath = join(dir, "svc.sock");
  const client = join(dir, "svc-client.py");
  writeFileSync(client, CLIENT);
  const server: Server = createServer((conn) => {
    let line = "";
    conn.on("data", (d) => {
      line += d.toString();
      if (!line.includes("\n")) return;
      const [host, verb, unit] = line.trim().split(" ");
      const ok = host !== undefined && unit !== undefined && (verb === "start" || verb === "stop");
      (ok ? act(host, verb, unit) : Promise.reject(new Error(`bad request ${line.trim()}`))).then(
        () => conn.end("ok\n"),
        (err: unknown) => conn.end(`error ${String(err).replaceAll("\n", " ")}\n`),
      );
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return {
    commandFor(host: string): string {
      const script = join(dir, `svc-${host}`);
      writeFileSync(script, `#!/bin/sh\nexec python3 ${client} ${socketPath} ${host} "$@"\n`);
      chmodSync(script, 0o755);
      return script;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
