// How long an R3 stream's writes pause when its leader is killed, measured many times in a row:
// `npx tsx test/chaos/leader-elections.ts [kills=20]` (DWCP_NATS_SERVER picks the server). A
// 3-node cluster of the chaos harness (routes to a dead node refused), one R3 stream, the
// suite's Prober writing throughout; each round kills the stream leader, measures the longest
// stretch without an acknowledged write, restarts the node and waits until it is current.
// RELIABILITY.md quotes its figures; the failover spec measures single kills with services.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StorageType } from "@nats-io/jetstream";
import { natsCredentialsOf } from "#common/credentials/connect.js";
import { provision } from "#common/credentials/provision.js";
import { NatsCluster, streamLeader, waitHealthy } from "./support/cluster.js";
import { connectCluster, retrying } from "./support/harness.js";
import { ledgerPath, sweep } from "./support/procs.js";
import { Prober } from "./support/probe.js";
import { serverInfo } from "./support/server-version.js";

const STREAM = "DWCP_EVT";
const kills = Number(process.argv[2] ?? 20);
const server = serverInfo();
const dir = mkdtempSync(join(tmpdir(), "dwcp-elections-"));
const credentials = await provision(join(dir, "credentials"), { hosts: [] });
const cluster = await NatsCluster.start(dir, server, credentials);
const nats = await connectCluster(cluster.urls(), natsCredentialsOf(credentials, "admin"));
const pauses: number[] = [];
try {
  await retrying("add the stream", () =>
    nats.jsm.streams.add({ name: STREAM, subjects: ["dwcp.evt.>"], num_replicas: 3, storage: StorageType.File }),
  );
  await waitHealthy(nats.jsm, [STREAM]);
  for (let i = 0; i < kills; i++) {
    const prober = new Prober(nats, `dwcp.evt.chaosprobe.election${i}`);
    prober.start();
    // A second of steady writes before the kill, so that the followers are busy replicating.
    await prober.ackAfter(performance.now() + 1_000, 30_000);
    const victim = cluster.indexOf(await streamLeader(nats.jsm, STREAM));
    const killedAt = performance.now();
    await cluster.kill(victim);
    await prober.ackAfter(killedAt, 60_000);
    const pause = prober.maxGap(killedAt, performance.now());
    await prober.stop();
    pauses.push(pause);
    process.stdout.write(`${server.version} kill ${i + 1} n${victim}: write pause ${Math.round(pause)} ms\n`);
    await cluster.startNode(victim);
    await waitHealthy(nats.jsm, [STREAM], 60_000);
  }
} finally {
  const sorted = [...pauses].sort((a, b) => a - b);
  const at = (q: number): number => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0);
  process.stdout.write(
    `${server.version}: ${sorted.length} kills, write pause median ${at(0.5)} ms, max ${at(1)} ms, ` +
      `over 10 s: ${sorted.filter((p) => p > 10_000).length}\n`,
  );
  await nats.nc.close();
  await cluster.stop();
  sweep();
  rmSync(ledgerPath(), { force: true });
  rmSync(dir, { recursive: true, force: true });
}
