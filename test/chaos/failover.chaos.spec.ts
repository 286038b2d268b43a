import { afterAll, beforeAll, describe, expect } from "vitest";
import type { StoredEvent } from "#common/event-store.js";
import { EVT_STREAM } from "#common/layout.js";
import { fold } from "../../services/coordinator/src/domain/migration/evolve.js";
import { laggingFollowers, streamLeader, waitHealthy } from "./support/cluster.js";
import { Chaos, DWCP_STREAMS, retrying } from "./support/harness.js";
import {
  duplicateTransitions,
  eventsOf,
  follow,
  MiB,
  slowMigration,
  verifyMigration,
  waitEnd,
  type Started,
} from "./support/migrations.js";
import { Prober } from "./support/probe.js";
import { scenario } from "./support/scenario.js";
import { rng, runSeed } from "./support/seed.js";

// NATS servers killed (-9) under load: the DWCP_EVT leader, then all three at once. A prober
// writes numbered messages into DWCP_EVT throughout and counts what was acknowledged.
const F = import.meta.filename;
let c: Chaos;

beforeAll(async () => {
  c = await Chaos.start("failover", rng(runSeed()));
  // The servers must die while batches are in flight. The link to b is capped (per connection)
  // so that each 4 MiB batch of incompressible data takes ~2 s whatever the data path does
  // (sendfile, LZ4, how its own limit counts bytes): 6 batches, two at a time, ~6 s in all.
  c.dataProxy.faults.rateBytesPerSec = 2 * MiB;
  await Promise.all([
    c.startCoordinator("c0"),
    c.startCoordinator("c1"),
    c.startMover("a1", "a"),
    c.startMover("b1", "b"),
  ]);
});
afterAll(async () => c?.stop());

/** Batches the destination completed more than once (work redone), seen on the data channel. */
const redone = (m: Started): number => {
  const oks = c.dataProxy.frames.filter((f) => f.migration === m.id && f.dir === "down" && f.kind === "BATCH_OK");
  return oks.length - new Set(oks.map((f) => f.batch)).size;
};

async function audit(prober: Prober, figures: Record<string, number | string | boolean>): Promise<void> {
  await prober.stop();
  const a = await prober.audit();
  Object.assign(figures, {
    acked: prober.acked.length,
    publishErrors: prober.errors,
    lostAcked: a.lost.length,
    duplicates: a.duplicates.length,
  });
  expect(a.lost, "acknowledged writes missing from the stream").toEqual([]);
  expect(a.duplicates, "writes stored twice").toEqual([]);
}

describe("NATS server failures", () => {
  scenario(F, "kill -9 the R3 stream leader, then restart it", async ({ seed, figures }) => {
    const prober = new Prober(c.nats, `dwcp.evt.chaosprobe.leader${seed}`);
    const m = await slowMigration(c, "leaderkill", seed, { sizeBytes: 24 * MiB, dense: true });
    prober.start();
    await waitTransfers(m.id, 1);
    const victim = c.cluster.indexOf(await streamLeader(c.nats.jsm, EVT_STREAM));
    figures["killed"] = `n${victim}`;
    const killedAt = performance.now();
    const killedAtMs = Date.now();
    await c.cluster.kill(victim);
    const goneAtMs = Date.now();
    await prober.ackAfter(killedAt, 30_000);
    figures["newLeader"] = (await retrying("find the new leader", () => streamLeader(c.nats.jsm, EVT_STREAM))) ?? "?";
    const restartAt = performance.now();
    await c.cluster.startNode(victim);
    await waitHealthy(c.nats.jsm, DWCP_STREAMS);
    figures["rejoinMs"] = performance.now() - restartAt;
    await waitEnd(c.observer, m.id);
    // The write pause: the longest stretch without an acknowledged write after the kill.
    const writeRtoMs = prober.maxGap(killedAt, performance.now());
    figures["writeRtoMs"] = writeRtoMs;
    // The services' own recovery: the first transfer the source mover got acknowledged after
    // the victim was gone (its append resent through the election with the same msgID).
    const recordedAt = transfersRecordedAfter(m.id, goneAtMs)[0];
    if (recordedAt === undefined)
      throw new Error(`${m.id}: the mover recorded no transfer after the kill (did the migration end before it?)`);
    const serviceRtoMs = recordedAt - killedAtMs;
    figures["serviceRtoMs"] = serviceRtoMs;
    await audit(prober, figures);
    const out = await verifyMigration(c, m.id, [m]);
    expect(duplicateTransitions(out.events)).toEqual([]);
    Object.assign(figures, { retries: out.retries, redoneBatches: redone(m) });
    expect(writeRtoMs, "writes resumed within 10 s").toBeLessThanOrEqual(10_000);
    expect(serviceRtoMs, "the migration's next event stored within 10 s").toBeLessThanOrEqual(10_000);
  });

  scenario(F, "kill -9 all three servers and restart: no acknowledged event lost", async ({ seed, figures }) => {
    const prober = new Prober(c.nats, `dwcp.evt.chaosprobe.all${seed}`);
    const m = await slowMigration(c, "allkill", seed, { sizeBytes: 24 * MiB, dense: true });
    prober.start();
    // What the services have reported so far: every event a reader could see (so: stored).
    const reported = await collectUntil(
      m.id,
      (events) => events.filter((e) => e.event.type === "ChunkBatchTransferred").length >= 2,
    );
    const killedAt = performance.now();
    await Promise.all(c.cluster.nodes.map((_, i) => c.cluster.kill(i)));
    const restartAt = performance.now();
    const restartAtMs = Date.now();
    figures["downMs"] = restartAt - killedAt;
    await Promise.all(c.cluster.nodes.map((_, i) => c.cluster.startNode(i)));
    await c.cluster.waitMeta(60_000);
    const first = await prober.ackAfter(restartAt, 60_000);
    figures["writeRtoFromRestartMs"] = first.at - restartAt;
    // What the claim needs: every stream leads and has a quorum (it takes writes, serves reads).
    // A follower still catching up is not a lost event; it is recorded below, and its server's
    // lines about the stream come with the error if no quorum forms.
    const logs = c.cluster.nodes.map((n) => n.log);
    await waitHealthy(c.nats.jsm, DWCP_STREAMS, 60_000, 3, { quorum: true, logs });
    figures["quorumMs"] = performance.now() - restartAt;

    const after = await retrying("read the log", () => eventsOf(c.observer, m.id));
    const prefix = after.slice(0, reported.length);
    expect(
      prefix.map((e) => e.seq),
      "every reported event kept its place",
    ).toEqual(reported.map((e) => e.seq));
    expect(prefix.map((e) => e.event)).toEqual(reported.map((e) => e.event));
    expect(
      fold(
        m.id,
        prefix.map((e) => e.event),
      ),
    ).toEqual(
      fold(
        m.id,
        reported.map((e) => e.event),
      ),
    );
    figures["reportedEvents"] = reported.length;

    await waitEnd(c.observer, m.id, 150_000);
    figures["completedAfterRestartMs"] = performance.now() - restartAt;
    const lagging = await laggingFollowers(c.nats.jsm, DWCP_STREAMS);
    figures["laggingFollowersAtEnd"] = lagging.length === 0 ? "none" : lagging.join("; ");
    const recordedAt = transfersRecordedAfter(m.id, restartAtMs)[0];
    figures["serviceRtoFromRestartMs"] = recordedAt === undefined ? "none" : recordedAt - restartAtMs;
    await audit(prober, figures);
    const out = await verifyMigration(c, m.id, [m]);
    expect(duplicateTransitions(out.events)).toEqual([]);
    Object.assign(figures, { retries: out.retries, redoneBatches: redone(m) });
  });
});

/**
 * When mover a1 had a transfer of `id` acknowledged by JetStream after `afterMs` (epoch ms, in
 * order), from its log: "batch transferred" is logged as the append's PubAck arrives. The stream's
 * own timestamp would not do: an append the old leader proposed just before it died is committed
 * by the new one with its original time.
 */
function transfersRecordedAfter(id: string, afterMs: number): number[] {
  return c
    .logLines("a1", /"batch transferred"/)
    .map((l) => JSON.parse(l) as { migrationId?: string; time?: string })
    .filter((l) => l.migrationId === id)
    .map((l) => Date.parse(l.time ?? ""))
    .filter((t) => t > afterMs)
    .sort((a, b) => a - b);
}

async function waitTransfers(id: string, n: number): Promise<void> {
  await collectUntil(id, (events) => events.filter((e) => e.event.type === "ChunkBatchTransferred").length >= n);
}

/** Follows a migration's log until `done(events so far)`; returns the events seen. */
async function collectUntil(
  id: string,
  done: (events: StoredEvent[]) => boolean,
  timeoutMs = 60_000,
): Promise<StoredEvent[]> {
  const seen: StoredEvent[] = [];
  await follow(c.observer, id, "the awaited events", (e) => (seen.push(e), done(seen)), timeoutMs);
  return seen;
}
