// The outage case of bench:wan (`npm run bench:wan -- --outage [--size 2G] [--outage-s 30]`): one
// incompressible file migrated from site a to site b twice on the same link, first undisturbed
// (the baseline), then with the link cut (wan.cut(): every packet in flight and every new one
// dropped) once half the file has crossed it, and restored `--outage-s` later. The figure: the
// migration completes, and what the outage made it send again, as the link counts it (bytes
// towards b in the outage run minus bytes in the baseline run; both runs pay the same TCP
// retransmissions for the profile's loss, headers and NATS traffic, so the difference is what
// the outage cost) and as dwcp counts it (wire bytes of acknowledged chunks, run minus baseline).
// Resume: from the heal until the source mover next reports an acknowledged chunk it had not
// reported before the cut (its BatchProgress, at most every 250 ms, so up to 0.25 s late).
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { subjects } from "#common/layout.js";
import { takeProgress } from "#common/progress.js";
import { INSECURE } from "#common/signing.js";
import { DEFAULT_BATCH_BYTES } from "#schemas/common.js";
import { buildStart, runMigration, type MigrationResult } from "../cli/migrate.js";
import { sha256File } from "../cli/verify.js";
import { eventsOf } from "../test/support/stack.js";
import type { Wan } from "../test/wan/wan.js";
import type { WanStack } from "../test/wan/wan-stack.js";

export interface OutageOptions {
  /** The file to migrate, relative to site a's root (incompressible bytes, written by the caller). */
  rel: string;
  size: number;
  outageMs: number;
  log: (s: string) => void;
}

interface Leg {
  r: MigrationResult;
  linkBytes: number;
}

const settle = (): void => void execFileSync("sync");

async function migrate(
  wan: Wan,
  ws: WanStack,
  o: OutageOptions,
  vm: string,
  during?: (id: string, ended: () => boolean) => Promise<void>,
): Promise<Leg> {
  settle();
  const before = await wan.bytesTo("b");
  const command = buildStart({
    vm,
    source: { host: "a", volumes: [{ path: o.rel, kind: "disk" }] },
    destination: { host: "b", dir: `in-${vm}` },
  });
  const id = command.migrationId ?? command.commandId;
  let ended = false;
  const running = runMigration(ws.stack.nats, command, { timeoutMs: 3_600_000 }).finally(() => (ended = true));
  await during?.(id, () => ended);
  const r = await running;
  const leg: Leg = { r, linkBytes: (await wan.bytesTo("b")) - before };
  if (r.state === "completed") {
    const dst = join(ws.stack.root("b"), `in-${vm}`, o.rel.split("/").at(-1) ?? "");
    if ((await sha256File(dst)) !== (await sha256File(join(ws.stack.root("a"), o.rel))))
      throw new Error(`${vm}: destination differs from source`);
  }
  rmSync(join(ws.stack.root("b"), `in-${vm}`), { recursive: true, force: true });
  return leg;
}

/**
 * Follows the source mover's progress reports of migration `id`: `mark()` notes what was
 * acknowledged so far; `next()` resolves at the first report of anything acknowledged since.
 */
function followProgress(ws: WanStack, id: string) {
  const done = new Map<number, number>();
  let marked: Map<number, number> | undefined;
  let waiting: ((t: number) => void) | undefined;
  const sub = ws.stack.nats.nc.subscribe(subjects.progress(id));
  void (async () => {
    for await (const m of sub) {
      const taken = takeProgress(m, INSECURE, "a");
      if (!taken.ok) continue;
      const { batch, bytes } = taken.progress;
      done.set(batch, Math.max(done.get(batch) ?? 0, bytes));
      if (marked !== undefined && waiting && bytes > (marked.get(batch) ?? 0)) {
        waiting(performance.now());
        waiting = undefined;
      }
    }
  })();
  return {
    mark: () => void (marked = new Map(done)),
    next: () => new Promise<number>((r) => (waiting = r)),
    stop: () => sub.unsubscribe(),
  };
}

/** The baseline and the outage run; the JSON fields of the outage figure. */
export async function benchOutage(wan: Wan, ws: WanStack, o: OutageOptions): Promise<Record<string, unknown>> {
  o.log(`  baseline: ${o.size} B, no outage`);
  const base = await migrate(wan, ws, o, "outage-baseline");
  if (base.r.state !== "completed") throw new Error(`baseline ${base.r.state}: ${base.r.reason} ${base.r.message}`);
  o.log(`  baseline ${base.r.seconds.toFixed(1)} s; now with a ${o.outageMs / 1000} s cut at half the file`);
  let cutAtBytes = 0;
  let resumeMs = NaN;
  const run = await migrate(wan, ws, o, "outage", async (id, ended) => {
    const progress = followProgress(ws, id);
    try {
      const before = await wan.bytesTo("b");
      // Polling the link's counter: the cut lands within 50 ms (~1.2 MB at 200 Mbit/s) of half.
      while ((await wan.bytesTo("b")) - before < o.size / 2) {
        if (ended()) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      await wan.cut();
      cutAtBytes = (await wan.bytesTo("b")) - before;
      progress.mark();
      // The outage itself: its length is the experiment, not a wait for something to happen.
      await new Promise((r) => setTimeout(r, o.outageMs));
      progress.mark();
      const resumed = progress.next();
      await wan.heal();
      const healed = performance.now();
      // No report at all after the heal (the migration ended or failed first): no resume figure.
      for (;;) {
        const t = await Promise.race([resumed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000))]);
        if (t !== undefined) {
          resumeMs = t - healed;
          break;
        }
        if (ended()) break;
      }
    } finally {
      progress.stop();
    }
  });
  const events = (await eventsOf(ws.stack, run.r.migrationId)).map((e) => e.event.type);
  const retried = events.filter((t) => t === "ChunkBatchFailed" || t === "ChunkBatchRetried").length;
  const destLog = readFileSync(join(ws.dataDir, "logs", "mover-b.log"), "utf8");
  const again = destLog.split("\n").filter((l) => l.includes("committed chunk received again")).length;
  const resent = run.linkBytes - base.linkBytes;
  return {
    outage_completed: run.r.state === "completed",
    outage_state: run.r.state,
    ...(run.r.state !== "completed" ? { outage_reason: `${run.r.reason} ${run.r.message}` } : {}),
    outage_bytes: o.size,
    outage_batch_bytes: DEFAULT_BATCH_BYTES,
    outage_s: o.outageMs / 1000,
    outage_cut_at_bytes: cutAtBytes,
    outage_total_s: run.r.seconds,
    outage_baseline_s: base.r.seconds,
    outage_extra_s: run.r.seconds - base.r.seconds - o.outageMs / 1000,
    outage_resume_s: resumeMs / 1000,
    outage_link_bytes: run.linkBytes,
    outage_baseline_link_bytes: base.linkBytes,
    outage_resent_bytes: resent,
    outage_resent_batches: resent / DEFAULT_BATCH_BYTES,
    outage_wire_bytes: run.r.wireBytes,
    outage_baseline_wire_bytes: base.r.wireBytes,
    outage_resent_wire_bytes: run.r.wireBytes - base.r.wireBytes,
    outage_batches_retried: retried,
    outage_committed_chunks_received_again: again,
  };
}
