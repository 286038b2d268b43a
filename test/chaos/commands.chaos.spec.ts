import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { JetStreamApiError } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, onTestFinished } from "vitest";
import { publishCommand } from "../../cli/client.js";
import type { TransferBatch } from "#schemas/index.js";
import {
  CMD_STREAM,
  COORDINATOR_DURABLE,
  ensureWorkStream,
  EVT_STREAM,
  MOVER_DURABLE,
  subjects,
  workStream,
} from "#common/layout.js";
import { moverRole } from "#common/credentials/provision.js";
import { Chaos, connectCluster, DWCP_STREAMS, retrying } from "./support/harness.js";
import {
  command,
  duplicateTransitions,
  makeImage,
  MiB,
  verifyMigration,
  waitEnd,
  waitEvent,
} from "./support/migrations.js";
import { waitHealthy } from "./support/cluster.js";
import { scenario } from "./support/scenario.js";
import { rng, runSeed } from "./support/seed.js";

// Hostile and repeated input on DWCP_CMD and the work queues, and the durability settings the
// services put in place on an R3 cluster.
const F = import.meta.filename;
let c: Chaos;

beforeAll(async () => {
  c = await Chaos.start("commands", rng(runSeed()));
  await Promise.all([
    c.startCoordinator("c0"),
    c.startCoordinator("c1"),
    c.startMover("a1", "a"),
    c.startMover("b1", "b"),
  ]);
});
afterAll(async () => c?.stop());

const raw = async (body: string | Uint8Array, msgID?: string): Promise<number> =>
  (await c.cli.js.publish(subjects.startMigration, body, msgID ? { msgID } : undefined)).seq;

describe("commands and durability settings", () => {
  scenario(
    F,
    "duplicate, malformed, oversized and unknown-version commands: one migration or a rejection, services stay up",
    async ({ seed, figures }) => {
      const id = `cmds-${seed}`;
      const rel = `vms/${id}/disk.img`;
      const src = await makeImage(c, "a", rel, { sizeBytes: 4 * MiB, zeroFraction: 0.5, seed });
      const good = command({ id, sources: [rel], dir: id });
      // The same command five times: three with its msgID (deduplicated by JetStream), two without.
      for (let i = 0; i < 3; i++) await publishCommand(c.cli, good);
      await raw(JSON.stringify(good));
      await raw(JSON.stringify(good));
      const rejections: Array<[string, number, string]> = [
        [
          "same migration id, another command",
          await raw(JSON.stringify({ ...good, commandId: `other-${seed}` })),
          "MIGRATION_ID_IN_USE",
        ],
        ["not JSON", await raw("{this is not json"), "INVALID_JSON"],
        ["binary garbage", await raw(randomBytes(512)), "INVALID_JSON"],
        [
          "unknown version",
          await raw(JSON.stringify({ ...good, commandId: `v9-${seed}`, migrationId: `v9-${seed}`, version: 9 })),
          "UNSUPPORTED_VERSION",
        ],
        [
          "unknown command",
          await raw(JSON.stringify({ type: "DeleteEverything", version: 1, commandId: `x-${seed}` })),
          "UNKNOWN_COMMAND",
        ],
        [
          "schema-invalid",
          await raw(JSON.stringify({ type: "StartMigration", version: 1, commandId: `bad-${seed}` })),
          "SCHEMA_INVALID",
        ],
      ];
      const lastBefore = (await c.nats.jsm.streams.info(CMD_STREAM)).state.last_seq;
      const oversized = await raw(
        JSON.stringify({ ...good, commandId: `big-${seed}`, pad: "x".repeat(300 * 1024) }),
      ).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(oversized, "a command over max_msg_size (256 KiB) is refused at publish").toBeInstanceOf(
        JetStreamApiError,
      );
      expect((await c.nats.jsm.streams.info(CMD_STREAM)).state.last_seq, "and not stored").toBe(lastBefore);
      figures["oversizedError"] = (oversized as JetStreamApiError).message;

      for (const [what, seq, reason] of rejections) {
        const body =
          what === "unknown version"
            ? `v9-${seed}`
            : what === "unknown command"
              ? `x-${seed}`
              : what === "schema-invalid"
                ? `bad-${seed}`
                : what === "same migration id, another command"
                  ? id
                  : `cmd-${seq}`;
        // A refusal of a command naming an existing migration lands beside it (CommandRejected).
        const refused = (ev: { type: string }): boolean =>
          ev.type === "MigrationRejected" || ev.type === "CommandRejected";
        const e = await waitEvent(c.observer, body, `${what} rejected`, refused, 30_000);
        expect(
          (e.event.type === "MigrationRejected" || e.event.type === "CommandRejected") && e.event.reason,
          what,
        ).toBe(reason);
      }
      await waitEnd(c.observer, id);
      const out = await verifyMigration(c, id, [{ src, dst: join(c.root("b"), id, "disk.img") }]);
      expect(
        out.events.filter((e) => e.event.type === "MigrationRequested"),
        "one migration from five copies",
      ).toHaveLength(1);
      expect(duplicateTransitions(out.events)).toEqual([]);
      // Nothing is left to redeliver (polled: a drained consumer emits no event).
      const info = await retrying("drain the command consumer", async () => {
        const i = await c.nats.jsm.consumers.info(CMD_STREAM, COORDINATOR_DURABLE);
        if (i.num_pending + i.num_ack_pending > 0)
          throw new Error(`${i.num_pending} pending, ${i.num_ack_pending} unacknowledged`);
        return i;
      });
      expect(info.num_redelivered, "no command was redelivered").toBe(0);
      for (const s of ["c0", "c1", "a1", "b1"]) expect(c.alive(s), `${s} still running`).toBe(true);
      Object.assign(figures, { commandsStored: info.delivered.stream_seq, rejections: rejections.length });
    },
  );

  scenario(
    F,
    "a work item nobody finishes hits max_deliver: MAX_DELIVERIES failure, removed from the queue",
    async ({ seed, figures }) => {
      // Host z has a work queue but no mover: the test plays a mover that gives up on every delivery.
      await retrying("create host z's work queue", () => ensureWorkStream(c.nats.jsm, "z", { replicas: 3 }));
      const id = `maxdeliver-${seed}`;
      const item: TransferBatch = {
        type: "TransferBatch",
        version: 1,
        migrationId: id,
        batch: 0,
        attempt: 0,
        sourceHost: "z",
        destHost: "b",
        destDir: id,
        volume: { index: 0, kind: "disk", sourcePath: "vms/none.img", destName: "none.img", sizeBytes: MiB },
        chunkSizeBytes: MiB,
        firstChunk: 0,
        chunkCount: 1,
      };
      // Dispatched as the coordinator dispatches, pulled with mover z's credentials.
      const coordinator = await connectCluster(c.cluster.urls(), c.as("coordinator"), "chaos-coordinator");
      const moverZ = await connectCluster(c.cluster.urls(), c.as(moverRole("z")), "chaos-mover-z");
      onTestFinished(async () => {
        for (const n of [coordinator, moverZ]) await n.nc.close().catch(() => undefined);
      });
      await coordinator.js.publish(subjects.work("z"), JSON.stringify(item), { msgID: `${id}.b0.a0` });
      const consumer = await moverZ.js.consumers.get(workStream("z"), MOVER_DURABLE);
      const maxDeliver = (await consumer.info()).config.max_deliver;
      if (!maxDeliver || maxDeliver < 1) throw new Error(`the work durable's max_deliver is unbounded: ${maxDeliver}`);
      // Counted up to max_deliver, not ended by 2 s of quiet: a missing delivery fails here.
      let deliveries = 0;
      while (deliveries < maxDeliver) {
        const m = await consumer.next({ expires: 10_000 });
        if (!m) throw new Error(`delivery ${deliveries + 1} of ${maxDeliver} did not come within 10 s`);
        deliveries++;
        m.nak();
      }
      // The server gives up (and advises MAX_DELIVERIES) when it would deliver once more, so a pull
      // must be waiting; it is still open when the failure event comes and must end empty.
      const past = consumer.next({ expires: 5_000 });
      const failed = await waitEvent(
        c.observer,
        id,
        "MAX_DELIVERIES",
        (e) => e.type === "ChunkBatchFailed" && e.code === "MAX_DELIVERIES",
        30_000,
      );
      expect(await past, "no delivery past max_deliver").toBeNull();
      expect(failed.event.type === "ChunkBatchFailed" && failed.event.retryable).toBe(true);
      expect(deliveries).toBe(maxDeliver);
      const left = await retrying("see the item deleted", async () => {
        const n = (await c.nats.jsm.streams.info(workStream("z"))).state.messages;
        if (n > 0) throw new Error(`${n} left`);
        return n;
      });
      expect(left).toBe(0);
      expect(await consumer.next({ expires: 2_000 }), "nothing comes back").toBeNull();
      Object.assign(figures, { maxDeliver, deliveries });
    },
  );

  scenario(
    F,
    "durability settings: R3 everywhere, bounded redelivery, idempotent appends, fsync per write where the server can",
    async ({ seed, figures }) => {
      // Every follower catches up (awaited: a stream being written, such as the movers' leases,
      // has a follower one message behind now and then, so "current" at one instant proves nothing).
      figures["allCurrentMs"] = await waitHealthy(c.nats.jsm, DWCP_STREAMS, 60_000);
      for (const name of DWCP_STREAMS) {
        const info = await c.nats.jsm.streams.info(name);
        expect(info.config.num_replicas, `${name} replicas`).toBe(3);
        expect(info.cluster?.replicas?.filter((r) => r.offline !== true).length, `${name} followers placed`).toBe(2);
        if (name !== "KV_dwcp_movers") expect(info.config.duplicate_window, `${name} dedup window`).toBeGreaterThan(0);
      }
      for (const [stream, durable] of [
        [CMD_STREAM, COORDINATOR_DURABLE],
        [workStream("a"), MOVER_DURABLE],
      ] as const) {
        const cfg = (await c.nats.jsm.consumers.info(stream, durable)).config;
        expect(cfg.max_deliver, `${stream}/${durable} max_deliver is bounded`).toBeGreaterThan(0);
        figures[`${durable}MaxDeliver`] = cfg.max_deliver ?? -1;
        figures[`${durable}AckWaitMs`] = (cfg.ack_wait ?? 0) / 1e6;
      }
      const subject = `dwcp.evt.chaosprobe.idem${seed}`;
      const first = await c.nats.js.publish(subject, "x", {
        msgID: `idem-${seed}`,
        expect: { lastSubjectSequence: 0 },
      });
      const again = await c.nats.js.publish(subject, "x", {
        msgID: `idem-${seed}`,
        expect: { lastSubjectSequence: 0 },
      });
      expect(again.duplicate, "a resent append is a no-op").toBe(true);
      expect(again.seq).toBe(first.seq);
      const stale = await c.nats.js
        .publish(subject, "y", { msgID: `idem2-${seed}`, expect: { lastSubjectSequence: 0 } })
        .catch((e: unknown) => e);
      expect(stale instanceof JetStreamApiError && stale.code, "a stale expected sequence is refused").toBe(10071);
      const varz = await c.cluster.monitor<{
        jetstream?: { config?: { sync_always?: boolean; sync_interval?: number } };
      }>(0, "varz");
      const syncAlways = varz.jetstream?.config?.sync_always === true;
      expect(
        syncAlways,
        `sync_interval: always is ${c.server.features.syncInterval ? "set" : "not available"} on ${c.server.version}`,
      ).toBe(c.server.features.syncInterval);
      Object.assign(figures, { syncAlways, evtStream: EVT_STREAM });
    },
  );
});
