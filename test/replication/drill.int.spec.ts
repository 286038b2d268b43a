import { open } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { runDrill } from "../../services/replication/src/app/drill.js";
import { makeImage, startTestStack } from "../support/stack.js";

const MiB = 1024 * 1024;

describe("disaster-recovery drill", () => {
  let stack: Awaited<ReturnType<typeof startTestStack>>;
  beforeAll(async () => {
    stack = await startTestStack();
  });
  afterAll(async () => stack?.cleanup());

  it(
    "after kill -9 of the primary, the DR site restores the last committed snapshot " +
      "from the store and the backed-up log",
    async () => {
      const disk = await makeImage(stack, "a", "vms/app/disk.img", { sizeBytes: 8 * MiB, zeroFraction: 0.5, seed: 21 });
      const m = await runMigration(
        stack.nats,
        buildStart({
          vm: "app",
          source: { host: "a", volumes: [{ path: "vms/app/disk.img", kind: "disk" }] },
          destination: { host: "b", dir: "in/app" },
          options: { chunkSizeBytes: 1 * MiB },
        }),
        { timeoutMs: 60_000 },
      );
      expect(m.state).toBe("completed");

      const pids = [
        stack.server.pid,
        ...stack.coordinators.map((c) => c.child.pid),
        ...[...stack.movers.values()].map((p) => p.child.pid),
      ];
      const report = await runDrill({
        primary: {
          nats: stack.nats,
          kill: async () => {
            await Promise.all([
              stack.server.stop("SIGKILL"),
              ...stack.coordinators.map((c) => c.stop("SIGKILL")),
              ...[...stack.movers.values()].map((p) => p.stop("SIGKILL")),
            ]);
          },
        },
        vm: "app",
        sources: [disk],
        drDir: join(stack.opts.dataDir, "dr"),
        syncs: 2,
        change: async (i) => {
          const fh = await open(disk, "r+");
          await fh.write(Buffer.alloc(4096, i), 0, 4096, i * 64 * 4096);
          await fh.close();
        },
      });
      for (const pid of pids) expect(() => process.kill(pid ?? -1, 0), `pid ${pid} still alive`).toThrow();
      expect(report.verified).toBe(true);
      expect(report.rpoSeconds).toBeGreaterThan(0);
      expect(report.rtoSeconds).toBeGreaterThan(0);
      expect(report.view.replications[0]?.snapshots).toHaveLength(2);
      expect(report.view.migrations.map((x) => [x.id, x.status])).toEqual([[m.migrationId, "completed"]]);
    },
  );
});
