import type { Subscription } from "@nats-io/transport-node";
import {
  StartMigration,
  type BatchProgress,
  type CancelMigration,
  type MigrationEvent,
  type SetMigrationOptions,
} from "#schemas/index.js";
import { subjects } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { takeProgress } from "#common/progress.js";
import type { Migration } from "#migration";
import { fmtBytes, fmtRate, UsageError } from "./args.js";
import { INSECURE, type EventTrust } from "#common/signing.js";
import { newId, publishCommand } from "./client.js";
import { followCommand } from "./follow.js";

export interface MigrationResult {
  migrationId: string;
  state: Migration["status"];
  bytes: number;
  wireBytes: number;
  zeroBytes: number;
  /** Logical bytes not sent because they were zero (whole zero chunks and zero pages within chunks). */
  zeroSkippedBytes?: number;
  /** Bytes of chunks sent compressed, before and after compression. */
  compressedBytesIn?: number;
  compressedBytesOut?: number;
  /** Bytes of chunks the destination took from its earlier copy (--incremental), not sent. */
  baseReusedBytes?: number;
  seconds: number;
  reason?: string;
  message?: string;
  volumes?: Array<{ destPath: string; sizeBytes: number; crc32c: number }>;
  /** A live migration's downtime (QEMU's figure), once completed. */
  downtimeMs?: number;
}

/** The flag that sets a StartMigration field, for messages: the user never sees the field names. */
const FLAG_OF: Record<string, string> = {
  vm: "--vm",
  source: "--from",
  destination: "--to",
  migrationId: "--id",
  commandId: "--id",
  chunkSizeBytes: "--chunk-size",
  batchSizeBytes: "--batch-size",
  bandwidthLimitBytesPerSec: "--bandwidth-limit",
  weight: "--weight",
  priority: "--priority",
  verify: "--no-verify",
  incremental: "--incremental",
  live: "--live",
  downtimeLimitMs: "--downtime-limit",
  ramBytesPerSec: "--bandwidth-limit",
  mirrorBytesPerSec: "--bandwidth-limit",
  postcopy: "--postcopy",
  autoConverge: "--no-auto-converge",
};

function flagOf(path: readonly PropertyKey[]): string {
  const key = path[0] === "options" || path[0] === "live" ? (path[1] ?? path[0]) : path[0];
  return FLAG_OF[String(key)] ?? "the request";
}

/** Validates locally (same schema as the coordinator) so typos fail before anything is sent. */
export function buildStart(
  input: Omit<StartMigration, "type" | "version" | "commandId" | "options"> & {
    commandId?: string;
    options?: Partial<StartMigration["options"]>;
  },
): StartMigration {
  const commandId = input.commandId ?? newId("cmd");
  const parsed = StartMigration.safeParse({
    type: "StartMigration",
    version: 1,
    ...input,
    commandId,
    migrationId: input.migrationId ?? newId("mig"),
  });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${flagOf(i.path)}: ${i.message}`);
    throw new UsageError(`${[...new Set(problems)].join("; ")} (see dwcp migrate --help)`);
  }
  return parsed.data;
}

/**
 * Progress on stderr: a bar with bytes, rate and ETA on a TTY, a line at most once a second
 * otherwise. `done` is logical bytes (on the wire plus skipped zero) of the plan's `total`.
 */
export function progressPrinter(stream: NodeJS.WriteStream = process.stderr): {
  update: (done: number, total: number) => void;
  done: () => void;
} {
  const started = Date.now();
  let lastLine = 0;
  let lastDone = -1;
  const tty = stream.isTTY;
  return {
    update: (done, total) => {
      if (total === 0 || done === lastDone) return;
      const secs = (Date.now() - started) / 1000;
      const rate = done / Math.max(secs, 0.001);
      const eta = rate > 0 ? (total - done) / rate : 0;
      const pct = Math.min(100, (100 * done) / total);
      const bar = "#".repeat(Math.round(pct / 4)).padEnd(25, ".");
      const progress = `${pct.toFixed(0).padStart(3)}% ${fmtBytes(done)}/${fmtBytes(total)}`;
      const line = `[${bar}] ${progress} ${fmtRate(rate)} ETA ${eta.toFixed(1)}s`;
      if (tty) stream.write(`\r${line}`);
      else if (Date.now() - lastLine >= 1000 || done === total) {
        stream.write(`${line}\n`);
        lastLine = Date.now();
      } else return;
      lastDone = done;
    },
    done: () => {
      if (tty) stream.write("\n");
    },
  };
}

/**
 * A migration's progress between its events: its folded totals plus what the source mover
 * reports of the batches still moving (BatchProgress on dwcp.progress.<id>, believed only from
 * the mover of the migration's source host). `onChange` hears the logical bytes done and the total.
 */
export class LiveProgress {
  private state: Migration | undefined;
  private readonly moving = new Map<number, BatchProgress>();
  private readonly sub: Subscription;

  constructor(
    nats: Nats,
    id: string,
    private readonly trust: EventTrust,
    private readonly onChange: (done: number, total: number) => void,
  ) {
    const sub = nats.nc.subscribe(subjects.progress(id));
    this.sub = sub;
    void (async () => {
      for await (const m of sub) {
        const taken = takeProgress(m, this.trust, this.state?.request?.source.host);
        if (taken.ok) this.report(taken.progress);
      }
    })();
  }

  /** The migration as folded after its latest event. */
  folded(s: Migration): void {
    this.state = s;
    for (const batch of this.moving.keys()) if (s.batches[batch]?.status !== "pending") this.moving.delete(batch);
    this.emit();
  }

  stop(): void {
    this.sub.unsubscribe();
  }

  private report(p: BatchProgress): void {
    const batch = this.state?.batches[p.batch];
    if (batch === undefined || batch.status !== "pending" || p.attempt !== batch.attempt) return;
    const before = this.moving.get(p.batch);
    if (before !== undefined && before.bytes >= p.bytes) return;
    this.moving.set(p.batch, p);
    this.emit();
  }

  private emit(): void {
    const s = this.state;
    if (s === undefined) return;
    let done = s.totals.bytes;
    for (const p of this.moving.values()) done += p.bytes;
    this.onChange(done, s.plan?.totalBytes ?? 0);
  }
}

/**
 * Publishes the command and follows it to its real outcome: the migration's end, or the
 * coordinator's refusal (an id already used by another command is refused, never taken for
 * that command's migration).
 */
export async function runMigration(
  nats: Nats,
  command: StartMigration,
  opts: {
    progress?: boolean;
    timeoutMs?: number;
    /** Fold only events from producers allowed to make them (the CLI's); default: every event. */
    trust?: EventTrust;
  } = {},
): Promise<MigrationResult> {
  const id = command.migrationId ?? command.commandId;
  const started = Date.now();
  const printer = opts.progress ? progressPrinter() : undefined;
  const live = printer ? new LiveProgress(nats, id, opts.trust ?? INSECURE, printer.update) : undefined;
  const abort = new AbortController();
  const timer = opts.timeoutMs ? setTimeout(() => abort.abort(), opts.timeoutMs) : undefined;
  const seq = await publishCommand(nats, command);
  let completed: Extract<MigrationEvent, { type: "MigrationCompleted" }> | undefined;
  try {
    const outcome = await followCommand(nats, command, seq, {
      onEvent: (e, s) => {
        live?.folded(s);
        if (e.type === "MigrationCompleted") completed = e;
      },
      signal: abort.signal,
      ...(opts.trust ? { trust: opts.trust } : {}),
    });
    if (outcome.kind === "refused")
      return {
        migrationId: id,
        state: "rejected",
        bytes: 0,
        wireBytes: 0,
        zeroBytes: 0,
        seconds: (Date.now() - started) / 1000,
        reason: outcome.reason,
        message: outcome.message,
      };
    const final = outcome.state;
    return {
      migrationId: id,
      state: final.status,
      bytes: final.totals.bytes,
      wireBytes: final.totals.wireBytes,
      zeroBytes: final.totals.zeroBytes,
      zeroSkippedBytes: final.totals.zeroSkippedBytes,
      compressedBytesIn: final.totals.packedInBytes,
      compressedBytesOut: final.totals.packedOutBytes,
      ...(final.totals.baseReusedBytes > 0 ? { baseReusedBytes: final.totals.baseReusedBytes } : {}),
      seconds: (completed?.durationMs ?? final.live?.totalMs ?? Date.now() - started) / 1000,
      ...(final.live?.downtimeMs === undefined ? {} : { downtimeMs: final.live.downtimeMs }),
      ...(final.reason ? { reason: final.reason, message: final.message } : {}),
      ...(completed
        ? { volumes: completed.volumes.map(({ destPath, sizeBytes, crc32c }) => ({ destPath, sizeBytes, crc32c })) }
        : {}),
    };
  } finally {
    clearTimeout(timer);
    live?.stop();
    printer?.done();
  }
}

/**
 * Publishes a cancel and waits for the coordinator's answer: the migration cancelled by it, or
 * the refusal (no such migration, or it already ended).
 */
/**
 * Publishes a command about an existing migration and follows it to the coordinator's answer:
 * done, or refused with its reason (`what` names the action in the refusal's message).
 */
async function answerOf(
  nats: Nats,
  command: CancelMigration | SetMigrationOptions,
  what: string,
  opts: { trust?: EventTrust; timeoutMs?: number },
): Promise<{ ok: true } | { ok: false; message: string; reason: string }> {
  const seq = await publishCommand(nats, command);
  const outcome = await followCommand(nats, command, seq, {
    timeoutMs: opts.timeoutMs ?? 30_000,
    ...(opts.trust ? { trust: opts.trust } : {}),
  });
  if (outcome.kind === "refused")
    return {
      ok: false,
      reason: outcome.reason,
      message: `cannot ${what} ${command.migrationId}: ${outcome.message}`,
    };
  return { ok: true };
}

/** What `dwcp migrate-set` changes: the limit (null: none), the weight, the priority; absent: as is. */
export interface OptionsChange {
  bytesPerSec?: number | null;
  weight?: number;
  priority?: number;
}

/** Changes a running migration's options and waits for the coordinator's answer. */
export async function runSetOptions(
  nats: Nats,
  migrationId: string,
  change: OptionsChange,
  opts: { trust?: EventTrust; timeoutMs?: number } = {},
): Promise<{ ok: boolean; message: string; reason?: string }> {
  const command: SetMigrationOptions = {
    type: "SetMigrationOptions",
    version: 1,
    commandId: newId("cmd"),
    migrationId,
    ...(change.bytesPerSec === undefined ? {} : { bandwidthLimitBytesPerSec: change.bytesPerSec }),
    ...(change.weight === undefined ? {} : { weight: change.weight }),
    ...(change.priority === undefined ? {} : { priority: change.priority }),
  };
  const answer = await answerOf(nats, command, "change", opts);
  if (!answer.ok) return answer;
  const parts: string[] = [];
  if (change.bytesPerSec !== undefined)
    parts.push(
      change.bytesPerSec === null ? "no bandwidth limit" : `a bandwidth limit of ${fmtRate(change.bytesPerSec)}`,
    );
  if (change.weight !== undefined) parts.push(`weight ${change.weight}`);
  if (change.priority !== undefined) parts.push(`priority ${change.priority}`);
  return { ok: true, message: `migration ${migrationId} now has ${parts.join(", ")}` };
}

/** Changes a running migration's bandwidth limit (undefined: none) and waits for the coordinator's answer. */
export function runSetLimit(
  nats: Nats,
  migrationId: string,
  bytesPerSec: number | undefined,
  opts: { trust?: EventTrust; timeoutMs?: number } = {},
): Promise<{ ok: boolean; message: string; reason?: string }> {
  return runSetOptions(nats, migrationId, { bytesPerSec: bytesPerSec ?? null }, opts);
}

export async function runCancel(
  nats: Nats,
  migrationId: string,
  opts: { reason?: string | undefined; trust?: EventTrust; timeoutMs?: number } = {},
): Promise<{ ok: boolean; message: string; reason?: string }> {
  const command: CancelMigration = {
    type: "CancelMigration",
    version: 1,
    commandId: newId("cmd"),
    migrationId,
    ...(opts.reason === undefined ? {} : { reason: opts.reason }),
  };
  const answer = await answerOf(nats, command, "cancel", opts);
  if (!answer.ok) return answer;
  return { ok: true, message: `migration ${migrationId} cancelled` };
}
