import { once } from "node:events";
import { connect, createServer, type Socket } from "node:net";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { Wan } from "./wan.js";

const SCRIPT = resolve(import.meta.dirname, "ns-bridge.mjs");

export interface Bridge {
  /** nats://127.0.0.1:<port>: 127.0.0.1, the name every server certificate carries. */
  url: string;
  close(): Promise<void>;
}

/**
 * Reaches 127.0.0.1:`port` inside `site`'s namespace from this one, without crossing the emulated
 * link: a relay on 127.0.0.1 here hands each connection over a unix socket in `dir` (a file, seen
 * from every network namespace) to ns-bridge.mjs in the site, which connects to the port. Two
 * user-space hops on loopback: tens of microseconds, beside the link's milliseconds.
 */
export async function bridgeInto(wan: Wan, site: string, port: number, dir: string): Promise<Bridge> {
  const path = join(dir, `bridge-${site}-${port}.sock`);
  const child = wan.spawn(site, process.execPath, [SCRIPT, path, String(port)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  if ((await lines.next()).value !== "listening") throw new Error(`ns-bridge into ${site} did not start`);
  const open = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect({ path });
    client.setNoDelay(true);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
    };
    open.add(client);
    for (const s of [client, upstream]) s.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("bridge has no TCP address");
  return {
    url: `nats://127.0.0.1:${addr.port}`,
    async close() {
      for (const s of open) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
    },
  };
}
