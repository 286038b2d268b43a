// Progress of a bandwidth-limited migration, through the built binary against a real stack: the
// source mover reports each moving batch several times a second (dwcp.progress.<id>), `dwcp
// migrate --wait` prints it at least once a second, and the reports add up to the batch events.
import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BatchProgress, ChunkBatchTransferred, MigrationCompleted } from "#schemas/index.js";
import { subjects } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { takeProgress } from "#common/progress.js";
import { BIN } from "../../cli/stack.js";
import { cliEventTrust } from "../../cli/client.js";
import { eventsOf, makeImage, startTestStack } from "../support/stack.js";

const MiB = 1024 * 1024;
let stack: Awaited<ReturnType<typeof startTestStack>>;
let cli: Nats;

beforeAll(async () => {
  stack = await startTestStack();
  cli = await stack.connect("cli");
  await makeImage(stack, "a", "vms/p/disk.img", { sizeBytes: 6 * MiB, zeroFraction: 0.3, seed: 11 });
});
afterAll(async () => {
  await cli?.nc.close();
  await stack?.cleanup();
});

describe("progress of a limited migration", () => {
  it("is reported more than once a second, printed at least once a second, and adds up", async () => {
    const trust = cliEventTrust(stack.opts.dataDir);
    const heard: Array<{ at: number; p: BatchProgress }> = [];
    const sub = cli.nc.subscribe(subjects.progress("prog-1"));
    void (async () => {
      for await (const m of sub) {
        const taken = takeProgress(m, trust, "a");
        if (taken.ok) heard.push({ at: Date.now(), p: taken.progress });
      }
    })();
    const lines: Array<{ at: number; text: string }> = [];
    const child = spawn(
      process.execPath,
      [
        BIN,
        "migrate",
        "--vm",
        "p",
        "--from",
        "a:vms/p/disk.img",
        "--to",
        "b:p",
        "--id",
        "prog-1",
        "--chunk-size",
        "64K",
        "--batch-size",
        "2M",
        "--bandwidth-limit",
        "1M/s",
        // The limit caps wire bytes: without compression they are the image's 4.2 MiB of data,
        // whatever share of it is text.
        "--compression",
        "none",
        "--wait",
        "--data-dir",
        stack.opts.dataDir,
      ],
      { env: { ...stack.env("cli"), DWCP_NATS_URL: stack.url }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let partial = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => {
      partial += d.toString();
      const parts = partial.split("\n");
      partial = parts.pop() ?? "";
      for (const text of parts) lines.push({ at: Date.now(), text });
    });
    const code = await new Promise<number | null>((r) => child.once("close", r));
    sub.unsubscribe();
    expect(code, `${stdout}\n${lines.map((l) => l.text).join("\n")}`).toBe(0);
    expect(stdout).toMatch(/^migration prog-1 completed: 6\.0 MiB/);

    // The mover's reports: more than one a second over the time they came in.
    expect(heard.length).toBeGreaterThan(4);
    const span = ((heard.at(-1)?.at ?? 0) - (heard[0]?.at ?? 0)) / 1000;
    expect(span).toBeGreaterThan(2); // 4.2 MiB on the wire at 1 MiB/s
    expect(heard.length / span).toBeGreaterThan(1);

    // The command's lines: the percentage climbs, and no second passes without one.
    const progress = lines.filter((l) => /^\[[#.]{25}\]\s+\d+% /.test(l.text));
    const pcts = progress.map((l) => Number(/\]\s+(\d+)%/.exec(l.text)?.[1]));
    expect(pcts.length).toBeGreaterThanOrEqual(3);
    expect(pcts).toEqual([...pcts].sort((x, y) => x - y));
    expect(pcts.at(-1)).toBe(100);
    for (let i = 1; i < progress.length; i++)
      expect((progress[i]?.at ?? 0) - (progress[i - 1]?.at ?? 0)).toBeLessThan(1_600);

    // The numbers add up: logical = data + zero in every report; each batch's last report is
    // what its ChunkBatchTransferred says; the batches sum to the migration's totals.
    for (const { p } of heard) expect(p.bytes).toBe(p.dataBytes + p.zeroBytes);
    const events = (await eventsOf(stack, "prog-1")).map((e) => e.event);
    const transferred = events.filter((e): e is ChunkBatchTransferred => e.type === "ChunkBatchTransferred");
    const completed = events.find((e): e is MigrationCompleted => e.type === "MigrationCompleted");
    expect(transferred.length).toBeGreaterThan(0);
    let sum = 0;
    let zero = 0;
    for (const t of transferred) {
      const last = heard.filter((h) => h.p.batch === t.batch && h.p.attempt === t.attempt).at(-1)?.p;
      expect(last, `batch ${t.batch} reported`).toBeDefined();
      expect(last?.bytes).toBe(t.bytes);
      expect(last?.chunks).toBe(t.chunks.length);
      expect(last?.zeroBytes).toBe(t.chunks.filter((c) => c.zero).reduce((n, c) => n + c.length, 0));
      expect(last?.wireBytes).toBe(t.chunks.reduce((n, c) => n + c.wireBytes, 0));
      sum += last?.bytes ?? 0;
      zero += last?.zeroBytes ?? 0;
    }
    expect(sum).toBe(completed?.totals.bytes);
    expect(zero).toBe(completed?.totals.zeroBytes);
  });
});
