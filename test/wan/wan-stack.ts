import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { provision } from "#common/credentials/provision.js";
import { deploymentServerConfig } from "#common/credentials/server-config.js";
import { findNatsServer, startNatsServer, type NatsServerHandle } from "#common/nats-server.js";
import { TcpRelay } from "#common/relay.js";
import { Stack } from "../../cli/stack.js";
import type { Wan } from "./wan.js";

const NATS_PORT = 4222;

export interface WanStack {
  stack: Stack;
  dataDir: string;
  /** Stops the services, the site's nats-server and the relay, and removes dataDir (unless keep). */
  stop(opts?: { keep?: boolean }): Promise<void>;
}

/**
 * A dwcp stack across an emulated WAN: nats-server (in the namespace of `wan.sites[0]`, the source
 * site), a coordinator beside it, and a mover in each site's namespace; the movers reach each
 * other and the server over the WAN. The caller (not in any site) reaches the server over the plain
 * veth to the source site (`hostSite`), through a loopback relay so the server's certificate
 * (127.0.0.1) matches; the other sites reach it as `wan-<site>` (its certificate names that too).
 */
export async function startWanStack(
  wan: Wan,
  hosts: string[] = wan.sites,
  opts: { env?: NodeJS.ProcessEnv } = {},
): Promise<WanStack> {
  const home = wan.sites[0] ?? "a";
  const dataDir = mkdtempSync(join(tmpdir(), "dwcp-wan-"));
  const credentials = await provision(dataDir, { hosts, serverNames: [`wan-${home}`] });
  const natsBin = findNatsServer();
  if (!natsBin) throw new Error("nats-server is not installed");
  const wrapper = join(dataDir, "nats-server-in-site.sh");
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${wan.ns(home)} ${natsBin} "$@"\n`);
  chmodSync(wrapper, 0o755);
  const storeDir = join(dataDir, "nats");
  mkdirSync(storeDir, { recursive: true });
  mkdirSync(join(dataDir, "logs"), { recursive: true });
  let server: NatsServerHandle | undefined;
  let relay: TcpRelay | undefined;
  let stack: Stack | undefined;
  const stop = async (opts: { keep?: boolean } = {}): Promise<void> => {
    await stack?.stop();
    await relay?.close();
    await server?.stop();
    if (!opts.keep && !process.env["DWCP_KEEP_TEST_DATA"]) rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    server = await startNatsServer({
      bin: wrapper,
      configFile: join(dataDir, "nats-server.conf"),
      config: deploymentServerConfig(credentials, { host: "0.0.0.0", port: NATS_PORT, storeDir }),
      port: NATS_PORT,
      logFile: join(dataDir, "logs", "nats-server.log"),
    });
    relay = await TcpRelay.start({ target: { host: wan.hostLink.site, port: NATS_PORT } });
    const placeMover = (host: string) => ({
      prefix: ["ip", "netns", "exec", wan.ns(host)],
      listen: `${wan.address(host)}:0`,
      natsUrl: host === home ? `nats://127.0.0.1:${NATS_PORT}` : `nats://wan-${home}:${NATS_PORT}`,
    });
    stack = new Stack({
      dataDir,
      hosts,
      replication: false,
      natsUrl: `nats://127.0.0.1:${relay.port}`,
      credentials,
      placeMover,
      ...(opts.env ? { env: opts.env } : {}),
      // Four processes compile and start at once; on a loaded 2-core machine that takes a while.
      startTimeoutMs: 120_000,
    });
    await stack.start();
    return { stack, dataDir, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
