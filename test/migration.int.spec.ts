import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildStart, runMigration } from "../cli/migrate.js";
import { fold } from "../services/coordinator/src/domain/migration/evolve.js";
import { allocatedBytes, sha256File } from "../cli/verify.js";
import { eventsOf, makeImage, startTestStack } from "./support/stack.js";

const MiB = 1024 * 1024;
type TestStack = Awaited<ReturnType<typeof startTestStack>>;

// The whole path twice: with the native kernels (when built) and with the TypeScript fallback.
describe.each(["auto", "off"])("end-to-end migration (DWCP_NATIVE=%s)", (native) => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startTestStack({ env: { DWCP_NATIVE: native } });
  });
  afterAll(async () => stack?.cleanup());

  it("moves a sparse disk and a memory image byte-identical, holes kept, log folds to Completed", async () => {
    const disk = await makeImage(stack, "a", "vms/vm1/disk.img", {
      sizeBytes: 64 * MiB + 12_345,
      zeroFraction: 0.85,
      seed: 1,
    });
    const mem = await makeImage(stack, "a", "vms/vm1/mem.img", { sizeBytes: 16 * MiB, zeroFraction: 0.4, seed: 2 });
    const command = buildStart({
      vm: "vm1",
      source: {
        host: "a",
        volumes: [
          { path: "vms/vm1/disk.img", kind: "disk" },
          { path: "vms/vm1/mem.img", kind: "memory" },
        ],
      },
      destination: { host: "b", dir: "in/vm1" },
      options: { chunkSizeBytes: 1 * MiB, batchSizeBytes: 8 * MiB },
    });
    const r = await runMigration(stack.nats, command, { timeoutMs: 120_000 });
    expect(r).toMatchObject({ state: "completed", bytes: 80 * MiB + 12_345 });

    for (const [src, name] of [
      [disk, "disk.img"],
      [mem, "mem.img"],
    ] as const) {
      const dst = join(stack.root("b"), "in/vm1", name);
      expect(await sha256File(dst)).toBe(await sha256File(src));
      // st_blocks also counts ext4's extent-tree blocks: the destination, written out of order by
      // concurrent batches, can have more extents than the sequentially written source and need
      // an index block or two more, while its data blocks are never more than the source's.
      expect(await allocatedBytes(dst)).toBeLessThanOrEqual((await allocatedBytes(src)) + 2 * 4096);
      expect(existsSync(`${dst}.part`)).toBe(false);
    }
    const events = await eventsOf(stack, r.migrationId);
    const state = fold(
      r.migrationId,
      events.map((e) => e.event),
    );
    expect(state.status).toBe("completed");
    expect(state.totals).toMatchObject({ bytes: 80 * MiB + 12_345, chunks: 65 + 16 });
    // With SEEK_DATA (native) the planner sizes batches by data, so the 85%-hole disk needs fewer
    // than the 9 uniform batches of 8 MiB; without it every batch is 8 MiB of the volume.
    if (native === "off") expect(state.totals.batches).toBe(9 + 2);
    else expect(state.totals.batches).toBeLessThan(9 + 2);
    expect(state.totals.zeroBytes).toBeGreaterThan(0);
    expect(state.totals.wireBytes).toBeLessThan(state.totals.bytes);
    expect(events.filter((e) => e.event.type === "MigrationPlanned")).toHaveLength(1);
  });

  it(
    "moves between two directories of one host without the socket: " +
      "byte-identical, holes kept, nothing on the wire",
    async () => {
      const disk = await makeImage(stack, "a", "vms/vm2/disk.img", {
        sizeBytes: 32 * MiB + 777,
        zeroFraction: 0.8,
        seed: 4,
      });
      const command = buildStart({
        vm: "vm2",
        source: { host: "a", volumes: [{ path: "vms/vm2/disk.img", kind: "disk" }] },
        destination: { host: "a", dir: "moved/vm2" },
        options: { chunkSizeBytes: 1 * MiB, batchSizeBytes: 8 * MiB },
      });
      const r = await runMigration(stack.nats, command, { timeoutMs: 120_000 });
      expect(r).toMatchObject({ state: "completed", bytes: 32 * MiB + 777 });
      const dst = join(stack.root("a"), "moved/vm2/disk.img");
      expect(await sha256File(dst)).toBe(await sha256File(disk));
      expect(await allocatedBytes(dst)).toBeLessThanOrEqual((await allocatedBytes(disk)) + 2 * 4096);
      expect(existsSync(`${dst}.part`)).toBe(false);
      const state = fold(
        r.migrationId,
        (await eventsOf(stack, r.migrationId)).map((e) => e.event),
      );
      expect(state.status).toBe("completed");
      expect(state.totals.wireBytes).toBe(0); // the local copy, not the data channel to itself
    },
  );

  it("rejects bad input with a reason, writes nothing, and keeps serving", async () => {
    await makeImage(stack, "a", "vms/ok/disk.img", { sizeBytes: 2 * MiB, seed: 3 });
    const bad: Array<[string, Parameters<typeof buildStart>[0], string]> = [
      [
        "unknown host",
        {
          vm: "x",
          source: { host: "zz", volumes: [{ path: "vms/ok/disk.img", kind: "disk" }] },
          destination: { host: "b", dir: "r1" },
        },
        "UNKNOWN_HOST",
      ],
      [
        "path outside root",
        {
          vm: "x",
          source: { host: "a", volumes: [{ path: "../../../../etc/passwd", kind: "disk" }] },
          destination: { host: "b", dir: "r2" },
        },
        "PATH_OUTSIDE_ROOT",
      ],
      [
        "absolute path outside root",
        {
          vm: "x",
          source: { host: "a", volumes: [{ path: "/etc/hostname", kind: "disk" }] },
          destination: { host: "b", dir: "r3" },
        },
        "PATH_OUTSIDE_ROOT",
      ],
      [
        "destination outside root",
        {
          vm: "x",
          source: { host: "a", volumes: [{ path: "vms/ok/disk.img", kind: "disk" }] },
          destination: { host: "b", dir: "/tmp/evil" },
        },
        "PATH_OUTSIDE_ROOT",
      ],
      [
        "missing source",
        {
          vm: "x",
          source: { host: "a", volumes: [{ path: "vms/nope.img", kind: "disk" }] },
          destination: { host: "b", dir: "r4" },
        },
        "SOURCE_NOT_FOUND",
      ],
    ];
    for (const [what, input, reason] of bad) {
      const r = await runMigration(stack.nats, buildStart(input), { timeoutMs: 60_000 });
      expect(r, what).toMatchObject({ state: "rejected", reason });
    }
    expect(readdirSync(stack.root("b")).filter((d) => /^r\d$/.test(d))).toEqual([]);
    expect(existsSync("/tmp/evil")).toBe(false);
    const ok = await runMigration(
      stack.nats,
      buildStart({
        vm: "ok",
        source: { host: "a", volumes: [{ path: "vms/ok/disk.img", kind: "disk" }] },
        destination: { host: "b", dir: "ok" },
      }),
      { timeoutMs: 60_000 },
    );
    expect(ok.state).toBe("completed");
  });
});
