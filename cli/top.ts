// `dwcp top`: what runs now, redrawn every interval in plain ANSI (no curses: cursor home, erase
// to end of line and screen, the alternate screen), or one JSON snapshot with --once --json. It
// reads what `dwcp status` reads (the coordinator's summaries, folds of migrations not yet ended),
// the movers' heartbeats (dwcp_movers), their signed progress reports (dwcp.progress.>), the
// coordinator's and movers' durables (consumer info) and the replicated VMs' logs.
import { Kvm, type KV } from "@nats-io/kv";
import type { Subscription } from "@nats-io/transport-node";
import { MoverRegistration, type MigrationSummary } from "#schemas/index.js";
import {
  COORDINATOR_DURABLE,
  CMD_STREAM,
  EVT_STREAM,
  MOVER_DURABLE,
  MOVERS_BUCKET,
  subjects,
  workStream,
} from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { takeProgress } from "#common/progress.js";
import type { EventTrust } from "#common/signing.js";
import type { Migration } from "#migration";
import { listSummaries, readMigration } from "./client.js";
import {
  RateTracker,
  topMigration,
  topMover,
  topReplication,
  type TopConsumer,
  type TopReplication,
  type TopSnapshot,
} from "./top-model.js";
import { renderTop } from "./top-view.js";

export interface TopOptions {
  trust: EventTrust;
  /** One snapshot, then exit. */
  once: boolean;
  json: boolean;
  /** Between redraws, in ms. */
  intervalMs: number;
  /** What top talks to, for the title. */
  source: string;
}

/** How long --once listens to progress reports before it answers, so a running migration has a rate. */
const ONCE_LISTEN_MS = 1_500;
/** Migrations not yet ended that are folded per refresh (for retries and in-flight bytes), at most. */
const FOLDED_MAX = 32;
/** Replicated VMs read, at most, and how often (their logs are longer than a migration's). */
const REPLICATED_MAX = 16;
const REPLICATION_EVERY_MS = 5_000;
const REPLICATION_SUBJECTS = "dwcp.evt.replication.>";

/** Reads everything top shows; `refresh` makes one snapshot. */
export class TopReader {
  private readonly rates: RateTracker;
  /** Each not-yet-ended migration's source host: only its mover's progress reports are believed. */
  private readonly sourceHosts = new Map<string, string>();
  private sub?: Subscription;
  private kv?: KV;
  private replication: { atMs: number; rows: TopReplication[]; problems: string[] } | undefined;

  constructor(
    private readonly nats: Nats,
    private readonly trust: EventTrust,
    private readonly clock: () => Date = () => new Date(),
  ) {
    this.rates = new RateTracker(clock().getTime());
  }

  async start(): Promise<void> {
    this.sub = this.nats.nc.subscribe(subjects.progressAll, {
      callback: (err, m) => {
        if (err) return;
        const id = m.subject.slice(subjects.progress("").length);
        const r = takeProgress(m, this.trust, this.sourceHosts.get(id));
        if (r.ok) this.rates.onProgress(r.progress, this.clock().getTime());
      },
    });
    this.kv = await new Kvm(this.nats.nc).open(MOVERS_BUCKET);
  }

  stop(): void {
    this.sub?.unsubscribe();
  }

  /** Every mover's registry entry (undefined: deleted or not a registration), by host. */
  private async registrations(): Promise<Map<string, MoverRegistration | undefined>> {
    const out = new Map<string, MoverRegistration | undefined>();
    if (this.kv === undefined) return out;
    const keys: string[] = [];
    for await (const k of await this.kv.keys()) keys.push(k);
    for (const host of keys.sort()) {
      const e = await this.kv.get(host);
      out.set(host, e?.operation === "PUT" ? MoverRegistration.safeParse(e.json()).data : undefined);
    }
    return out;
  }

  async refresh(): Promise<TopSnapshot> {
    const problems: string[] = [];
    const summaries = await listSummaries(this.nats, this.trust);
    const folded = await this.foldNotEnded(summaries);
    const now = this.clock();
    const migrations = summaries.map((s) => topMigration(s, folded.get(s.migrationId), this.rates, now));
    this.rates.keepOnly(new Set(folded.keys()));
    const registrations = await this.registrations();
    const hosts = [...registrations.keys()];
    const movers = hosts.map((h) => topMover(h, registrations.get(h), this.rates, now));
    const consumers = await this.consumers(hosts, problems);
    const replication = await this.replicated(now);
    return {
      at: now.toISOString(),
      migrations,
      movers,
      replication: replication.rows,
      consumers,
      problems: [...problems, ...replication.problems],
    };
  }

  private async foldNotEnded(summaries: readonly MigrationSummary[]): Promise<Map<string, Migration>> {
    const ids = summaries
      .filter((s) => s.endedAt === undefined)
      .slice(0, FOLDED_MAX)
      .map((s) => s.migrationId);
    const folded = new Map<string, Migration>();
    await Promise.all(
      ids.map(async (id) => {
        const { state } = await readMigration(this.nats, id, this.trust);
        folded.set(id, state);
        const host = state.request?.source.host;
        if (host !== undefined) this.sourceHosts.set(id, host);
      }),
    );
    for (const id of this.sourceHosts.keys()) if (!folded.has(id)) this.sourceHosts.delete(id);
    return folded;
  }

  /** The coordinator's command durable and each registered host's work durable. */
  private async consumers(hosts: readonly string[], problems: string[]): Promise<TopConsumer[]> {
    const wanted = [
      { stream: CMD_STREAM, durable: COORDINATOR_DURABLE },
      ...hosts.map((h) => ({ stream: workStream(h), durable: MOVER_DURABLE })),
    ];
    const out: TopConsumer[] = [];
    for (const w of wanted) {
      try {
        const info = await this.nats.jsm.consumers.info(w.stream, w.durable);
        out.push({
          ...w,
          numPending: info.num_pending,
          numAckPending: info.num_ack_pending,
          numRedelivered: info.num_redelivered,
          numWaiting: info.num_waiting,
        });
      } catch (err) {
        problems.push(`${w.stream}/${w.durable}: ${(err as Error).message}`);
      }
    }
    return out;
  }

  /** Each replicated VM's newest snapshot, re-read every REPLICATION_EVERY_MS. */
  private async replicated(now: Date): Promise<{ rows: TopReplication[]; problems: string[] }> {
    const cached = this.replication;
    if (cached !== undefined && now.getTime() - cached.atMs < REPLICATION_EVERY_MS)
      return {
        rows: cached.rows.map((r) => topReplication(r.vm, r.snapshots, r.lastSnapshotAt, now)),
        problems: cached.problems,
      };
    const info = await this.nats.jsm.streams.info(EVT_STREAM, { subjects_filter: REPLICATION_SUBJECTS });
    const vms = Object.keys(info.state.subjects ?? {})
      .map((s) => s.slice(REPLICATION_SUBJECTS.length - 1))
      .sort();
    const rows: TopReplication[] = [];
    const problems: string[] = [];
    if (vms.length > 0) {
      const { readReplicationChecked } = await import("#replication");
      for (const vm of vms.slice(0, REPLICATED_MAX)) {
        try {
          const { state } = await readReplicationChecked(this.nats, vm, this.trust);
          rows.push(topReplication(vm, state.snapshots.length, state.snapshots.at(-1)?.takenAt, now));
        } catch (err) {
          problems.push(`replication of ${vm}: ${(err as Error).message}`);
        }
      }
      if (vms.length > REPLICATED_MAX) problems.push(`${vms.length - REPLICATED_MAX} more replicated VMs not shown`);
    }
    this.replication = { atMs: now.getTime(), rows, problems };
    return { rows, problems };
  }
}

const CSI = "\x1b[";
const ALT_SCREEN_ON = `${CSI}?1049h${CSI}?25l`;
const ALT_SCREEN_OFF = `${CSI}?25h${CSI}?1049l`;

/** Runs `dwcp top`; resolves to the exit code (0 on q or Ctrl-C). */
export async function runTop(nats: Nats, o: TopOptions): Promise<number> {
  const reader = new TopReader(nats, o.trust);
  await reader.start();
  try {
    if (o.once) {
      // Two looks, ONCE_LISTEN_MS apart, so a running migration's rate is a measured one.
      await reader.refresh();
      await new Promise((r) => setTimeout(r, ONCE_LISTEN_MS));
      const s = await reader.refresh();
      const out = o.json
        ? JSON.stringify(s)
        : renderTop(s, { width: process.stdout.columns || 80, height: 1_000, source: o.source }).join("\n");
      process.stdout.write(`${out}\n`);
      return 0;
    }
    return await live(reader, o);
  } finally {
    reader.stop();
  }
}

/** Redraws every interval until q, Ctrl-C or SIGTERM. */
async function live(reader: TopReader, o: TopOptions): Promise<number> {
  const out = process.stdout;
  const input = process.stdin;
  let quit!: () => void;
  const quitting = new Promise<void>((r) => (quit = r));
  const onKey = (d: Buffer): void => {
    // q, Q, Ctrl-C (raw mode delivers it as a byte), Ctrl-D.
    if (d.includes(0x71) || d.includes(0x51) || d.includes(0x03) || d.includes(0x04)) quit();
  };
  const raw = input.isTTY === true;
  if (raw) input.setRawMode(true);
  input.on("data", onKey);
  input.resume();
  process.once("SIGINT", quit);
  process.once("SIGTERM", quit);
  out.write(ALT_SCREEN_ON);
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const draw = async (): Promise<void> => {
    const began = Date.now();
    let lines: string[];
    try {
      const s = await reader.refresh();
      lines = renderTop(s, { width: out.columns || 80, height: out.rows || 24, source: o.source });
    } catch (err) {
      lines = [`dwcp top: ${(err as Error).message}`.slice(0, out.columns || 80)];
    }
    if (stopped) return;
    out.write(`${CSI}H${lines.map((l) => `${l}${CSI}K`).join("\r\n")}${CSI}J`);
    // The next frame an interval after this one began, however long the reads took.
    timer = setTimeout(() => void draw(), Math.max(0, began + o.intervalMs - Date.now()));
  };
  try {
    await Promise.race([draw(), quitting]);
    await quitting;
    return 0;
  } finally {
    stopped = true;
    clearTimeout(timer);
    process.removeListener("SIGINT", quit);
    process.removeListener("SIGTERM", quit);
    input.removeListener("data", onKey);
    if (raw) input.setRawMode(false);
    input.pause();
    out.write(ALT_SCREEN_OFF);
  }
}
