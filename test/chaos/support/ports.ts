import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";

/**
 * Listen ports for the cluster, its route proxies and the data proxy, all reserved at once and
 * taken from below the kernel's ephemeral range: a node killed and restarted must get its port
 * back, and an outgoing connection's auto-bound local port (always from the ephemeral range)
 * could otherwise be sitting on it.
 */
export async function allocPorts(n: number, hosts: string[] = ["127.0.0.1"]): Promise<number[]> {
  const [ephemeralLow] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
  const high = Math.min(ephemeralLow ?? 32768, 65535) - 1;
  const low = Math.max(1024, high - 12_000);
  const held: Server[] = [];
  const ports: number[] = [];
  try {
    for (let tries = 0; ports.length < n; tries++) {
      if (tries > n * 50) throw new Error(`no ${n} free ports in ${low}-${high}`);
      const port = low + Math.floor(Math.random() * (high - low));
      if (ports.includes(port)) continue;
      const servers: Server[] = [];
      let ok = true;
      for (const host of hosts) {
        const s = createServer();
        ok = await new Promise<boolean>((resolve) => {
          s.once("error", () => resolve(false));
          s.listen({ host, port, exclusive: true }, () => resolve(true));
        });
        if (!ok) break;
        servers.push(s);
      }
      held.push(...servers);
      if (ok) ports.push(port);
    }
    return ports;
  } finally {
    await Promise.all(held.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}
