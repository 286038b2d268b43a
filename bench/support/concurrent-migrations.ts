import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DeliverPolicy } from "@nats-io/jetstream";
import { StartMigration, type MigrationEvent } from "#schemas/index.js";
import { safeJson } from "#common/json.js";
import { EVT_STREAM, subjects } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import type { Stack } from "../../cli/stack.js";

// N small migrations a → b on an embedded stack, started by a plain NATS client (the cli role's
// credentials, not the CLI) and counted by their terminal events. Shared by bench/concurrent.ts
// and the CI test that runs a small N (test/scale.int.spec.ts).

const TERMINAL = new Set<MigrationEvent["type"]>([
  "MigrationCompleted",
  "MigrationFailed",
  "MigrationCancelled",
  "MigrationRejected",
]);

const encoder = new TextEncoder();

export interface ConcurrentOptions {
  n: number;
  /** Bytes of each migration's one volume. Default 64 KiB. */
  volumeBytes?: number;
  /** StartMigration publishes awaiting their PubAck at once. Default 256. */
  publishWindow?: number;
  /** Give up when the last terminal event has not come by then, ms. Default 600000. */
  timeoutMs?: number;
  /** Told every few seconds how many migrations have ended. */
  progress?: (ended: number, n: number) => void;
  /** Where the volumes land at host b, beneath its root (a run after another needs its own). Default in/scale. */
  destDir?: string;
}

export interface ConcurrentResult {
  n: number;
  /** The migrations' ids, in publish order. */
  migrationIds: string[];
  /** From the first publish to the last terminal event. */
  seconds: number;
  migrationsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Terminal event type → count. */
  outcomes: Record<string, number>;
  /** Events on the migrations' subjects up to their terminal event, per migration. */
  eventsPerMigration: number;
  /** Migrations whose destination file differs from the source (0 when every one completed). */
  mismatched: number;
}

export const volumePath = (i: number): string => `vms/scale/v${i}.img`;
export const DEST_DIR = "in/scale";

/** Writes the N source volumes (distinct random content) under host `a`'s root. */
export async function writeVolumes(stack: Stack, n: number, bytes = 64 * 1024): Promise<void> {
  await mkdir(join(stack.root("a"), "vms/scale"), { recursive: true });
  for (let i = 0; i < n; i++) await writeFile(join(stack.root("a"), volumePath(i)), randomBytes(bytes));
}

/** The StartMigration of migration `i` of a run tagged `run`. */
export function startCommand(run: string, i: number, destDir = DEST_DIR): StartMigration {
  return StartMigration.parse({
    type: "StartMigration",
    version: 1,
    commandId: `${run}-c${i}`,
    migrationId: `${run}-m${i}`,
    vm: `scale-${i}`,
    source: { host: "a", volumes: [{ path: volumePath(i), kind: "disk" }] },
    destination: { host: "b", dir: destDir },
  });
}

const percentile = (sorted: number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;

/**
 * Publishes N StartMigration commands through `client` (a window of PubAcks in flight), follows
 * `dwcp.evt.migration.>` with an ordered consumer created first, and resolves when every
 * migration has a terminal event; then compares every destination with its source.
 */
export async function runConcurrent(stack: Stack, client: Nats, o: ConcurrentOptions): Promise<ConcurrentResult> {
  const { n } = o;
  const destDir = o.destDir ?? DEST_DIR;
  const run = `s${Date.now().toString(36)}`;
  const prefix = subjects.migration(`${run}-m`);
  const startedAt = new Map<string, number>();
  const latencies: number[] = [];
  const events = new Map<string, number>();
  const outcomes: Record<string, number> = {};
  const endedIds = new Set<string>();
  let ended = 0;
  let lastEnd = 0;
  let allEnded!: () => void;
  const done = new Promise<void>((r) => (allEnded = r));

  const consumer = await client.js.consumers.get(EVT_STREAM, {
    filter_subjects: subjects.migrationEvents,
    deliver_policy: DeliverPolicy.New,
  });
  const iter = await consumer.consume({ max_messages: 1_000, expires: 5_000 });
  const follow = (async () => {
    for await (const m of iter) {
      if (!m.subject.startsWith(prefix)) continue;
      const id = m.subject.slice(m.subject.lastIndexOf(".") + 1);
      const type = (safeJson(m.data) as { type?: MigrationEvent["type"] } | undefined)?.type;
      if (endedIds.has(id)) continue;
      events.set(id, (events.get(id) ?? 0) + 1);
      if (type === undefined || !TERMINAL.has(type)) continue;
      const now = performance.now();
      outcomes[type] = (outcomes[type] ?? 0) + 1;
      endedIds.add(id);
      latencies.push(now - (startedAt.get(id) ?? now));
      lastEnd = now;
      if (++ended === n) allEnded();
    }
  })();

  const timer = o.progress ? setInterval(() => o.progress?.(ended, n), 2_000) : undefined;
  const window = o.publishWindow ?? 256;
  const t0 = performance.now();
  try {
    let next = 0;
    const publisher = async (): Promise<void> => {
      while (next < n) {
        const i = next++;
        const cmd = startCommand(run, i, destDir);
        startedAt.set(cmd.migrationId ?? "", performance.now());
        await client.js.publish(subjects.startMigration, encoder.encode(JSON.stringify(cmd)), {
          msgID: cmd.commandId,
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(window, n) }, publisher));
    const timeoutMs = o.timeoutMs ?? 600_000;
    let timeout: NodeJS.Timeout | undefined;
    await Promise.race([
      done,
      new Promise<never>((_, reject) => {
        timeout = setTimeout(
          () => reject(new Error(`only ${ended} of ${n} migrations ended within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]).finally(() => clearTimeout(timeout));
  } finally {
    clearInterval(timer);
    iter.stop();
    await follow.catch(() => undefined);
  }

  let mismatched = 0;
  for (let i = 0; i < n; i++) {
    const src = await readFile(join(stack.root("a"), volumePath(i)));
    const dst = await readFile(join(stack.root("b"), destDir, `v${i}.img`)).catch(() => undefined);
    if (!dst || !src.equals(dst)) mismatched++;
  }
  latencies.sort((a, b) => a - b);
  const seconds = (lastEnd - t0) / 1000;
  const total = [...events.values()].reduce((a, b) => a + b, 0);
  return {
    n,
    migrationIds: Array.from({ length: n }, (_, i) => startCommand(run, i).migrationId ?? ""),
    seconds,
    migrationsPerSec: n / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.at(-1) ?? 0,
    outcomes,
    eventsPerMigration: total / n,
    mismatched,
  };
}
