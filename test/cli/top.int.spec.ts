// `dwcp top` through the built binary against a real stack: its snapshot agrees with `dwcp
// status`, a running rate-limited migration shows running with a measured rate, and the live view
// in a pseudo-terminal (util-linux `script`) redraws, fits 80 columns and exits 0 on q.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BIN } from "../../cli/stack.js";
import { buildStart, runMigration } from "../../cli/migrate.js";
import type { StatusRow } from "../../cli/status-table.js";
import type { TopSnapshot } from "../../cli/top-model.js";
import { cliOf, makeImage, startTestStack, waitForEvent } from "../support/stack.js";

const KiB = 1024;
const MiB = 1024 * KiB;
let stack: Awaited<ReturnType<typeof startTestStack>>;

/** A CSI escape sequence (cursor moves, erases, modes). */
const ANSI_SEQUENCE = new RegExp(`${String.fromCharCode(27)}\\[[0-9;?]*[A-Za-z]`, "g");

const env = (): NodeJS.ProcessEnv => ({ ...stack.env("cli"), DWCP_NATS_URL: stack.url });

const dwcp = (...args: string[]) => cliOf(stack)(...args);

async function json<T>(...args: string[]): Promise<T> {
  const r = await dwcp(...args);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as T;
}

const start = (i: number, path = "vms/t/disk.img") =>
  buildStart({
    vm: `t${i}`,
    source: { host: "a", volumes: [{ path, kind: "disk" }] },
    destination: { host: "b", dir: `t/${i}` },
    options: { chunkSizeBytes: 64 * KiB, batchSizeBytes: 128 * KiB },
    migrationId: `top-${i}`,
  });

beforeAll(async () => {
  stack = await startTestStack();
  await makeImage(stack, "a", "vms/t/disk.img", { sizeBytes: 256 * KiB, zeroFraction: 0.5, seed: 5 });
  await Promise.all([0, 1, 2].map((i) => runMigration(stack.nats, start(i), { timeoutMs: 60_000 })));
  await runMigration(stack.nats, start(3, "vms/none/disk.img"), { timeoutMs: 60_000 });
});
afterAll(async () => stack?.cleanup());

/** What both commands report of a migration. */
const shared = (r: StatusRow) => ({
  migrationId: r.migrationId,
  state: r.state,
  vm: r.vm,
  bytesDone: r.bytesDone,
  bytesTotal: r.bytesTotal,
  wireBytes: r.wireBytes,
  zeroBytes: r.zeroBytes,
  batchesDone: r.batchesDone,
  batches: r.batches,
});

describe("dwcp top", () => {
  it("--once --json agrees with dwcp status --json, and shows the movers and the consumers' lag", async () => {
    const [top, status] = await Promise.all([
      json<TopSnapshot>("top", "--once", "--json"),
      json<StatusRow[]>("status", "--json"),
    ]);
    expect(top.migrations.map(shared)).toEqual(status.map(shared));
    expect(top.migrations.map((m) => m.state)).toEqual(["completed", "completed", "completed", "rejected"]);
    expect(top.migrations[0]).toMatchObject({ bytesDone: 256 * KiB, progress: 1, inFlightBytes: 0 });
    expect(top.movers.map((m) => [m.host, m.health])).toEqual([
      ["a", "ok"],
      ["b", "ok"],
    ]);
    const lag = Object.fromEntries(top.consumers.map((c) => [`${c.stream}/${c.durable}`, c]));
    expect(Object.keys(lag).sort()).toEqual(["DWCP_CMD/coordinator", "DWCP_WORK_a/mover", "DWCP_WORK_b/mover"]);
    // Everything was consumed and acknowledged; each service waits for more. The coordinator's
    // pull expires every 2 s (LIVE_CONSUME) and is renewed once the server says so: in between it
    // has none waiting, so a snapshot may fall there; the next one shows it waiting again.
    for (const c of Object.values(lag)) expect(c).toMatchObject({ numPending: 0, numAckPending: 0 });
    const coordinatorWaiting = async (): Promise<number | undefined> =>
      (await json<TopSnapshot>("top", "--once", "--json")).consumers.find(
        (c) => c.stream === "DWCP_CMD" && c.durable === "coordinator",
      )?.numWaiting;
    if ((lag["DWCP_CMD/coordinator"]?.numWaiting ?? 0) === 0)
      await expect.poll(coordinatorWaiting, { timeout: 30_000 }).toBeGreaterThan(0);
    expect(top.problems).toEqual([]);
  });

  it("shows a running rate-limited migration as running, with a measured rate and an ETA", async () => {
    await makeImage(stack, "a", "vms/slow/disk.img", { sizeBytes: 24 * MiB, zeroFraction: 0, seed: 9 });
    const command = buildStart({
      vm: "slow",
      migrationId: "top-slow",
      source: { host: "a", volumes: [{ path: "vms/slow/disk.img", kind: "disk" }] },
      destination: { host: "b", dir: "slow" },
      // 24 MiB at 2 MiB/s: about 12 s, 10 of them after the first batch, long enough for top to
      // look twice while it runs. The limit
      // is on the wire: uncompressed, so it holds for the logical bytes too.
      options: {
        chunkSizeBytes: 256 * KiB,
        batchSizeBytes: 4 * MiB,
        verify: false,
        compression: "none",
        bandwidthLimitBytesPerSec: 2 * MiB,
      },
    });
    const run = runMigration(stack.nats, command, { timeoutMs: 120_000 });
    // Running from its first batch's transfer on (planned before).
    await waitForEvent(stack, "top-slow", (e) => e.event.type === "ChunkBatchTransferred");
    const top = await json<TopSnapshot>("top", "--once", "--json");
    const slow = top.migrations.find((m) => m.migrationId === "top-slow");
    expect(slow?.state).toBe("running");
    expect(slow?.rateBytesPerSecond).toBeGreaterThan(0);
    // Measured from the sending mover's progress reports, within the limit's reach (a generous
    // bound: the token bucket allows a burst).
    expect(slow?.rateSource).toBe("progress");
    expect(slow?.rateBytesPerSecond).toBeLessThan(8 * MiB);
    expect(slow?.bytesTotal).toBe(24 * MiB);
    expect(slow?.etaSeconds).toBeGreaterThan(0);
    expect(slow?.retries).toBe(0);
    // Host a sends it.
    expect(top.movers.find((m) => m.host === "a")?.sendBytesPerSecond).toBeGreaterThanOrEqual(0);
    expect((await run).state).toBe("completed");
  }, 120_000);

  it("shows a replicated VM's newest snapshot and its RPO, as dwcp snapshots lists it", async () => {
    await Promise.all(["a", "b"].map((h) => stack.startReplication(h)));
    const synced = await dwcp("replicate", "--vm", "r", "--from", "a:vms/t/disk.img", "--to", "b:repl", "--json");
    expect(synced.stderr).toBe("");
    expect(synced.code).toBe(0);
    const listed = await json<Array<{ snapshotId: string; takenAt: string }>>("snapshots", "--vm", "r", "--json");
    const top = await json<TopSnapshot>("top", "--once", "--json");
    const r = top.replication.find((x) => x.vm === "r");
    expect(r).toMatchObject({ snapshots: 1, lastSnapshotAt: listed.at(-1)?.takenAt });
    // Taken moments ago (generous: a loaded machine).
    expect(r?.rpoSeconds).toBeGreaterThanOrEqual(0);
    expect(r?.rpoSeconds).toBeLessThan(120);
  }, 120_000);

  it("in a pseudo-terminal, redraws every second within 80 columns and exits 0 on q", async () => {
    const top = ptyTop();
    const t0 = Date.now();
    await top.frames(2);
    const redrawMs = Date.now() - t0;
    top.child.stdin.write("q");
    expect(await top.exit()).toBe(0);
    // Generous: start-up, two frames a second apart, on a loaded machine.
    expect(redrawMs).toBeLessThan(20_000);
    const text = top
      .output()
      .replaceAll("\x1b[H", "\n")
      .replace(ANSI_SEQUENCE, "")
      .split(/\r?\n|\r/)
      .filter((l) => l.length > 0);
    expect(text.some((l) => l.startsWith("dwcp top"))).toBe(true);
    expect(text.some((l) => l.startsWith("MIGRATION"))).toBe(true);
    expect(text.some((l) => l.startsWith("top-0"))).toBe(true);
    expect(text.some((l) => l.startsWith("DWCP_CMD/coordinator"))).toBe(true);
    for (const l of text) expect(l.length, l).toBeLessThanOrEqual(80);
  }, 60_000);

  it("in a pseudo-terminal, exits 0 on Ctrl-C and leaves the alternate screen", async () => {
    const top = ptyTop();
    await top.frames(1);
    top.child.stdin.write("\x03");
    expect(await top.exit()).toBe(0);
    expect(top.output()).toContain("\x1b[?1049l");
  }, 60_000);
});

/** `dwcp top` in an 80x24 pseudo-terminal (util-linux script; -e returns the command's exit code). */
function ptyTop() {
  const child: ChildProcessWithoutNullStreams = spawn(
    "script",
    [
      "-qefc",
      `stty cols 80 rows 24; exec '${process.execPath}' '${BIN}' top --data-dir '${stack.opts.dataDir}'`,
      "/dev/null",
    ],
    { env: env(), stdio: "pipe" },
  );
  let out = "";
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  // Each frame starts at the cursor's home position.
  const count = (): number => out.split("\x1b[H").length - 1;
  child.stdout.on("data", (d: Buffer) => {
    out += d.toString();
    for (const w of waiters) if (count() >= w.n) w.resolve();
  });
  const closed = new Promise<number | null>((r) => child.once("close", r));
  const bounded = async <T>(p: Promise<T>, what: string): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${what} within 20 s; saw:\n${out}`)), 20_000);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    child,
    output: () => out,
    frames: (n: number) =>
      bounded(
        new Promise<void>((resolve) => (count() >= n ? resolve() : waiters.push({ n, resolve }))),
        `not ${n} frames`,
      ),
    exit: () => bounded(closed, "no exit"),
  };
}
