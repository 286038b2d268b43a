import { createCipheriv, createHash } from "node:crypto";
import { mkdir, open, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { expect } from "vitest";
import { prng } from "../../../cli/image.js";
import { DeliverPolicy } from "@nats-io/jetstream";
import { publishCommand } from "../../../cli/client.js";
import { retryTransient } from "#common/nats.js";
import { buildStart } from "../../../cli/migrate.js";
import { sha256File } from "../../../cli/verify.js";
import type { MigrationEvent, StartMigration } from "#schemas/index.js";
import { decodeEvent, EventStore, type StoredEvent } from "#common/event-store.js";
import { EVT_STREAM } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { evolve, fold } from "../../../services/coordinator/src/domain/migration/evolve.js";
import { batchRange } from "../../../services/coordinator/src/domain/migration/planner.js";
import {
  initialMigration,
  isTerminal,
  type Migration,
} from "../../../services/coordinator/src/domain/migration/state.js";
import { retrying, type Chaos } from "./harness.js";

export const MiB = 1024 * 1024;

export interface ChaosImageSpec {
  sizeBytes: number;
  /** Fraction of the image left as holes. Default 0.9; ignored when `dense`. */
  zeroFraction?: number;
  seed?: number;
  /** No holes at all. */
  dense?: boolean;
}

/**
 * A sparse VM-like image (data extents of 64 KiB to 4 MiB at unaligned offsets, the rest holes)
 * or, `dense`, one without holes. Its data is incompressible: the data channel compresses with
 * LZ4, and the scenarios need every byte to cross the link so that a rate limit sets how long a
 * batch takes and a fault lands mid-transfer. (cli/image.ts's xorshift repeats every 32 KiB, which
 * LZ4's 64 KiB window packs ~28:1: its "random" 4 MiB batches crossed as ~148 KB.)
 */
export async function makeImage(c: Chaos, host: string, rel: string, spec: ChaosImageSpec): Promise<string> {
  const path = join(c.root(host), rel);
  await mkdir(dirname(path), { recursive: true });
  const seed = spec.seed ?? 1;
  const data = new Keystream(seed);
  const fh = await open(path, "w");
  try {
    await fh.truncate(spec.sizeBytes);
    if (spec.dense) {
      for (let off = 0; off < spec.sizeBytes; off += 4 * MiB)
        await data.write(fh, off, Math.min(4 * MiB, spec.sizeBytes - off));
    } else {
      const next = prng(seed);
      const target = Math.floor(spec.sizeBytes * (1 - (spec.zeroFraction ?? 0.9)));
      for (let written = 0; written < target; ) {
        const len = Math.min(65536 + (next() % (4 * MiB - 65536)), target - written, spec.sizeBytes);
        await data.write(fh, next() % Math.max(1, spec.sizeBytes - len), len);
        written += len;
      }
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return path;
}

/** Seeded bytes no compressor shrinks: an AES-128-CTR keystream keyed by the seed. */
class Keystream {
  private readonly cipher;
  private readonly zeros = Buffer.alloc(4 * MiB);

  constructor(seed: number) {
    const key = createHash("sha256").update(`dwcp-chaos-${seed}`).digest().subarray(0, 16);
    this.cipher = createCipheriv("aes-128-ctr", key, Buffer.alloc(16));
  }

  async write(fh: FileHandle, offset: number, length: number): Promise<void> {
    await fh.write(this.cipher.update(this.zeros.subarray(0, length)), 0, length, offset);
  }
}

export interface MigrationInput {
  id: string;
  /** Source paths relative to host a's root. */
  sources: string[];
  /** Destination directory relative to host b's root. */
  dir: string;
  chunkSizeBytes?: number;
  batchSizeBytes?: number;
  bandwidthLimitBytesPerSec?: number;
}

export function command(m: MigrationInput): StartMigration {
  return buildStart({
    vm: m.id,
    commandId: `cmd-${m.id}`,
    migrationId: m.id,
    source: { host: "a", volumes: m.sources.map((path) => ({ path, kind: "disk" as const })) },
    destination: { host: "b", dir: m.dir },
    options: {
      chunkSizeBytes: m.chunkSizeBytes ?? MiB,
      batchSizeBytes: m.batchSizeBytes ?? 4 * MiB,
      bandwidthLimitBytesPerSec: m.bandwidthLimitBytesPerSec,
    },
  });
}

export async function startMigration(nats: Nats, m: MigrationInput): Promise<StartMigration> {
  const cmd = command(m);
  // A cluster just started may still be electing its JetStream leaders ("jetstream is not
  // enabled" until then); the command's msgID makes a resend a no-op.
  await retryTransient(() => publishCommand(nats, cmd));
  return cmd;
}

/**
 * The test's own log readers. With the client's default 30 s pull expiry, on a 2.12 cluster the
 * first pull of a fresh ordered consumer is sometimes lost and nothing arrives for ~45 s (see
 * RELIABILITY.md), which would distort every timing measured here. Pulls that expire after 2 s
 * (as EventStore.read's do) bound that stall to ~3 s.
 */
const PULL_EXPIRES_MS = 2_000;

/**
 * Follows one migration's events from its first, in order, until `onEvent` returns true or the
 * deadline passes (then rejects with `what`). No polling: events are pushed as they are stored.
 */
export async function follow(
  nats: Nats,
  id: string,
  what: string,
  onEvent: (e: StoredEvent) => boolean,
  timeoutMs = 90_000,
): Promise<StoredEvent> {
  // Creating a consumer can time out while the cluster re-elects or still counts a cut-off node
  // as a placement candidate: retried (there is no event to wait for).
  const consumer = await retrying("create a reader", () =>
    nats.js.consumers.get(EVT_STREAM, {
      filter_subjects: `dwcp.evt.migration.${id}`,
      deliver_policy: DeliverPolicy.All,
    }),
  );
  const iter = await consumer.consume({ expires: PULL_EXPIRES_MS });
  const timer = setTimeout(() => iter.stop(new Error(`${id}: no ${what} within ${timeoutMs} ms`)), timeoutMs);
  try {
    for await (const m of iter) {
      const e = decodeEvent(m);
      if (e && onEvent(e)) return e;
    }
    throw new Error(`${id}: no ${what} within ${timeoutMs} ms`);
  } finally {
    clearTimeout(timer);
    iter.stop();
  }
}

/** Every event of a migration stored so far. */
export async function eventsOf(nats: Nats, id: string): Promise<StoredEvent[]> {
  const last = await new EventStore(nats.js, nats.jsm).lastSeq(id);
  const out: StoredEvent[] = [];
  if (last > 0) await follow(nats, id, `events up to ${last}`, (e) => (out.push(e), e.seq >= last), 60_000);
  return out;
}

/** Resolves with the first event of `id` that matches, whether already stored or still to come. */
export async function waitEvent(
  nats: Nats,
  id: string,
  what: string,
  match: (e: MigrationEvent) => boolean,
  timeoutMs = 90_000,
): Promise<StoredEvent> {
  return follow(nats, id, what, (e) => match(e.event), timeoutMs);
}

/** Follows the migration to its terminal event; resolves with the folded state. */
export async function waitEnd(nats: Nats, id: string, timeoutMs = 120_000): Promise<Migration> {
  let state = initialMigration(id);
  await follow(nats, id, "terminal event", (e) => ((state = evolve(state, e.event)), isTerminal(state)), timeoutMs);
  return state;
}

const TERMINAL = new Set(["MigrationCompleted", "MigrationFailed", "MigrationCancelled", "MigrationRejected"]);

/** Keys of logical transitions recorded more than once (a duplicate that dedup should have dropped). */
export function duplicateTransitions(events: StoredEvent[]): string[] {
  const seen = new Map<string, number>();
  for (const { event: e } of events) {
    let key: string | undefined;
    if (e.type === "MigrationRequested" || e.type === "MigrationPlanned") key = e.type;
    else if (TERMINAL.has(e.type)) key = "terminal";
    else if (e.type === "ChunkBatchTransferred" || e.type === "ChunkBatchRetried")
      key = `${e.type} b${e.batch} a${e.attempt}`;
    if (key !== undefined) seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  return [...seen].filter(([, n]) => n > 1).map(([k, n]) => `${k} x${n}`);
}

export interface Outcome {
  state: Migration;
  events: StoredEvent[];
  /** Batches that were recorded as transferred more than once (only the first counts). */
  extraTransfers: number;
  retries: number;
}

/**
 * The invariants every scenario ends with: the log folds to "completed" with exactly one
 * terminal event; every planned batch has exactly one effective ChunkBatchTransferred whose
 * chunks are exactly the batch's planned chunks; the totals equal the plan; and every
 * destination file is byte-identical (sha256) to its source.
 */
export async function verifyMigration(
  c: Chaos,
  id: string,
  files: Array<{ src: string; dst: string }>,
): Promise<Outcome> {
  const events = await eventsOf(c.observer, id);
  const state = fold(
    id,
    events.map((e) => e.event),
  );
  expect(state.status, `${id}: ${state.reason ?? ""} ${state.message ?? ""}`).toBe("completed");
  expect(
    events.filter((e) => TERMINAL.has(e.event.type)),
    "exactly one terminal event",
  ).toHaveLength(1);
  const plan = state.plan;
  if (plan === undefined) throw new Error(`${id} has no plan`);
  const effective = new Map<number, number[]>();
  let m = initialMigration(id);
  let transfers = 0;
  for (const { event } of events) {
    const before = m.batches[event.type === "ChunkBatchTransferred" ? event.batch : -1]?.status;
    m = evolve(m, event);
    if (event.type !== "ChunkBatchTransferred") continue;
    transfers++;
    if (before !== "done" && m.batches[event.batch]?.status === "done") {
      expect(effective.has(event.batch), `batch ${event.batch} became done twice`).toBe(false);
      effective.set(
        event.batch,
        event.chunks.map((ch) => ch.offset),
      );
    }
  }
  for (let b = 0; b < plan.batchCount; b++) {
    const range = batchRange(plan, b);
    const want = Array.from(
      { length: range?.chunkCount ?? 0 },
      (_, i) => ((range?.firstChunk ?? 0) + i) * plan.chunkSizeBytes,
    );
    expect(effective.get(b), `batch ${b}: its planned chunks, each exactly once`).toEqual(want);
  }
  expect(state.totals).toMatchObject({ bytes: plan.totalBytes, chunks: plan.chunkCount, batches: plan.batchCount });
  for (const f of files)
    expect(await sha256File(f.dst), `${f.dst} is byte-identical to ${f.src}`).toBe(await sha256File(f.src));
  return {
    state,
    events,
    extraTransfers: transfers - plan.batchCount,
    retries: events.filter((e) => e.event.type === "ChunkBatchRetried").length,
  };
}

export interface Started {
  id: string;
  src: string;
  dst: string;
}

/**
 * A migration of a fresh sparse image from a to b, rate-limited so that faults land mid-transfer:
 * 1 MiB chunks, 4 MiB batches, 4 MiB/s by default (the data is incompressible, see makeImage).
 * `dense`: no holes, so that it takes sizeBytes / rate.
 */
export async function slowMigration(
  c: Chaos,
  name: string,
  seed: number,
  o: { sizeBytes?: number; rate?: number; batchSizeBytes?: number; dense?: boolean } = {},
): Promise<Started> {
  const id = `${name}-${seed}`;
  const rel = `vms/${id}/disk.img`;
  const src = await makeImage(c, "a", rel, {
    sizeBytes: o.sizeBytes ?? 16 * MiB,
    zeroFraction: 0.3,
    seed,
    dense: o.dense,
  });
  await startMigration(c.cli, {
    id,
    sources: [rel],
    dir: id,
    batchSizeBytes: o.batchSizeBytes,
    bandwidthLimitBytesPerSec: o.rate ?? 4 * MiB,
  });
  return { id, src, dst: join(c.root("b"), id, "disk.img") };
}
