import { Kvm } from "@nats-io/kv";
import { MoverRegistration, type MigrationSummary } from "#schemas/index.js";
import { EVT_STREAM, MOVERS_BUCKET } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import type { EventTrust } from "#common/signing.js";
import { isTerminal, type Migration } from "#migration";
import { listSummaries, watchMigration } from "../client.js";
import { LiveProgress } from "../migrate.js";

// What the dashboard shows, gathered from NATS as the read-only observer: migrations (the
// coordinator's summaries, and for each one still moving its folded events and the source
// mover's batch progress), the mover registry, the replication logs' snapshots and, at a
// federation site, the federation's view. Each read that fails is named in `problems`; the rest
// still shows.

/** A migration as the page shows it: its summary with the bytes moved as of now and the rate. */
export interface MigrationView {
  id: string;
  vm: string | undefined;
  state: MigrationSummary["state"];
  requestedAt: string | undefined;
  endedAt: string | undefined;
  /** Logical bytes done, with what the source mover reports of batches still moving. */
  bytes: number;
  totalBytes: number | undefined;
  wireBytes: number;
  batchesDone: number;
  batches: number | undefined;
  /** Logical bytes per second over the last few seconds; 0 once it ended. */
  rateBytesPerSec: number;
  reason: string | undefined;
  message: string | undefined;
  /** Stream sequence of its last event. */
  lastSeq: number;
  source: string | undefined;
  destination: string | undefined;
}

export interface MoverView {
  host: string;
  dataAddress: string;
  pid: number;
  startedAt: string;
  heartbeatAt: string;
  heartbeatAgeSeconds: number;
}

export interface ReplicationView {
  vm: string;
  /** Seconds since the newest committed snapshot was taken (the recovery point objective now). */
  rpoSeconds: number | undefined;
  snapshots: Array<{ id: string; takenAt: string; bytes: number; changedBytes: number; wireBytes: number }>;
}

export interface DashboardSnapshot {
  at: string;
  /** The newest MIGRATIONS_SHOWN migrations, oldest first. */
  migrations: MigrationView[];
  /** How many migrations there are in all. */
  migrationsTotal: number;
  /** Aggregate rate history: seconds since the epoch and logical bytes per second. */
  throughput: { t: number[]; bytesPerSec: number[] };
  movers: MoverView[];
  replication: ReplicationView[];
  /** The federation's report (`dwcp federation status --json`) at a federation site, else undefined. */
  sites: unknown;
  /** Sections that could not be read just now, and why. */
  problems: string[];
}

/** The seconds of rate history kept for the chart. */
const HISTORY_SECONDS = 300;
/** The window a migration's rate is measured over. */
const RATE_WINDOW_MS = 3_000;
/** Replication and federation change slowly: read every this many ticks. */
const SLOW_EVERY = 5;
/** At most this many migrations are followed live at once (the newest); the rest show their summaries. */
const FOLLOWED_MAX = 32;
/** Migrations in a snapshot (the newest): a long history would otherwise be sent every second. */
const MIGRATIONS_SHOWN = 200;
/** Snapshots listed per VM (the newest). */
const SNAPSHOTS_SHOWN = 50;

interface Followed {
  state: Migration | undefined;
  liveBytes: number;
  samples: Array<{ t: number; bytes: number }>;
  stop: () => void;
}

export interface CollectorOptions {
  nats: Nats;
  trust: EventTrust;
  /** Reads the federation's report at a federation site; undefined elsewhere. */
  federation?: (() => Promise<unknown>) | undefined;
  /** Reads one VM's replication (its committed snapshots). */
  replication?: ((vm: string) => Promise<ReplicationView>) | undefined;
}

export class Collector {
  private readonly followed = new Map<string, Followed>();
  private readonly history: { t: number[]; bytesPerSec: number[] } = { t: [], bytesPerSec: [] };
  private ticks = 0;
  private slow: { replication: ReplicationView[]; sites: unknown; problems: string[] } = {
    replication: [],
    sites: undefined,
    problems: [],
  };

  constructor(private readonly o: CollectorOptions) {}

  /** One snapshot as of now. */
  async collect(now = new Date()): Promise<DashboardSnapshot> {
    const problems: string[] = [];
    const [summaries, movers] = await Promise.all([
      listSummaries(this.o.nats, this.o.trust).catch((err: unknown) => {
        problems.push(`migrations: ${messageOf(err)}`);
        return [] as MigrationSummary[];
      }),
      this.movers(now).catch((err: unknown) => {
        problems.push(`movers: ${messageOf(err)}`);
        return [] as MoverView[];
      }),
    ]);
    if (this.ticks++ % SLOW_EVERY === 0) this.slow = await this.readSlow(now);
    const migrations = summaries.slice(-MIGRATIONS_SHOWN).map((s) => this.view(s, now.getTime()));
    this.follow(summaries);
    this.record(now, migrations);
    return {
      at: now.toISOString(),
      migrations,
      migrationsTotal: summaries.length,
      throughput: { t: [...this.history.t], bytesPerSec: [...this.history.bytesPerSec] },
      movers,
      replication: this.slow.replication,
      sites: this.slow.sites,
      problems: [...problems, ...this.slow.problems],
    };
  }

  stop(): void {
    for (const f of this.followed.values()) f.stop();
    this.followed.clear();
  }

  private view(s: MigrationSummary, nowMs: number): MigrationView {
    const f = this.followed.get(s.migrationId);
    const live = f?.state;
    // The followed fold is at least as new as the summary; its live bytes include moving batches.
    const state = live && live.eventCount >= s.messages ? live.status : s.state;
    const bytes = Math.max(s.bytes, f?.liveBytes ?? 0);
    if (f) {
      f.samples.push({ t: nowMs, bytes });
      while (f.samples.length > 2 && (f.samples[0]?.t ?? nowMs) < nowMs - RATE_WINDOW_MS) f.samples.shift();
    }
    const first = f?.samples[0];
    const ended = state !== "running" && state !== "planned" && state !== "requested";
    const rate =
      !ended && first !== undefined && nowMs > first.t ? ((bytes - first.bytes) * 1000) / (nowMs - first.t) : 0;
    const request = live?.request;
    return {
      id: s.migrationId,
      vm: s.vm,
      state,
      requestedAt: s.requestedAt,
      endedAt: s.endedAt,
      bytes,
      totalBytes: s.totalBytes ?? live?.plan?.totalBytes,
      wireBytes: Math.max(s.wireBytes, live?.totals.wireBytes ?? 0),
      batchesDone: s.batchesDone,
      batches: s.batches,
      rateBytesPerSec: Math.max(0, rate),
      reason: s.reason,
      message: s.message,
      lastSeq: s.lastSeq,
      source: request?.source.host,
      destination: request ? `${request.destination.host}:${request.destination.dir}` : undefined,
    };
  }

  /** Follows the events and batch progress of the newest migrations that have not ended. */
  private follow(summaries: MigrationSummary[]): void {
    const moving = summaries
      .filter((s) => s.state === "requested" || s.state === "planned" || s.state === "running")
      .slice(-FOLLOWED_MAX);
    for (const s of moving) {
      if (this.followed.has(s.migrationId)) continue;
      const f: Followed = { state: undefined, liveBytes: 0, samples: [], stop: () => undefined };
      const abort = new AbortController();
      const live = new LiveProgress(this.o.nats, s.migrationId, this.o.trust, (done) => (f.liveBytes = done));
      f.stop = () => {
        abort.abort();
        live.stop();
      };
      this.followed.set(s.migrationId, f);
      void watchMigration(
        this.o.nats,
        s.migrationId,
        (_e, state) => {
          f.state = state;
          live.folded(state);
        },
        abort.signal,
        this.o.trust,
      )
        .then((state) => {
          f.state = state;
          live.folded(state);
        })
        .catch(() => undefined)
        .finally(() => live.stop());
    }
    // Forget those that ended (their summaries say all) and those no longer listed.
    const listed = new Set(summaries.map((s) => s.migrationId));
    for (const [id, f] of this.followed)
      if (!listed.has(id) || (f.state !== undefined && isTerminal(f.state) && f.samples.length > 0)) {
        const s = summaries.find((x) => x.migrationId === id);
        if (s === undefined || s.state === f.state?.status) {
          f.stop();
          this.followed.delete(id);
        }
      }
  }

  private record(now: Date, migrations: MigrationView[]): void {
    const t = now.getTime() / 1000;
    this.history.t.push(t);
    this.history.bytesPerSec.push(migrations.reduce((sum, m) => sum + m.rateBytesPerSec, 0));
    while ((this.history.t[0] ?? t) < t - HISTORY_SECONDS) {
      this.history.t.shift();
      this.history.bytesPerSec.shift();
    }
  }

  private async movers(now: Date): Promise<MoverView[]> {
    const kv = await new Kvm(this.o.nats.nc).open(MOVERS_BUCKET);
    const out: MoverView[] = [];
    for await (const key of await kv.keys()) {
      const e = await kv.get(key);
      if (e?.operation !== "PUT") continue;
      const r = MoverRegistration.safeParse(e.json());
      if (!r.success) continue;
      out.push({
        host: r.data.host,
        dataAddress: r.data.dataAddress,
        pid: r.data.pid,
        startedAt: r.data.startedAt,
        heartbeatAt: r.data.heartbeatAt,
        heartbeatAgeSeconds: Math.max(0, (now.getTime() - Date.parse(r.data.heartbeatAt)) / 1000),
      });
    }
    return out.sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  }

  private async readSlow(now: Date): Promise<{ replication: ReplicationView[]; sites: unknown; problems: string[] }> {
    const problems: string[] = [];
    let replication: ReplicationView[] = [];
    const read = this.o.replication;
    if (read !== undefined) {
      try {
        const vms = await replicatedVms(this.o.nats);
        replication = await Promise.all(vms.map((vm) => read(vm)));
        for (const r of replication) {
          const last = r.snapshots.at(-1);
          r.rpoSeconds =
            last === undefined ? undefined : Math.max(0, (now.getTime() - Date.parse(last.takenAt)) / 1000);
          r.snapshots = r.snapshots.slice(-SNAPSHOTS_SHOWN);
        }
      } catch (err) {
        problems.push(`replication: ${messageOf(err)}`);
      }
    }
    let sites: unknown;
    if (this.o.federation !== undefined) {
      try {
        sites = await this.o.federation();
      } catch (err) {
        problems.push(`sites: ${messageOf(err)}`);
      }
    }
    return { replication, sites, problems };
  }
}

/** The VMs with a replication log (subjects dwcp.evt.replication.<vm> in the event stream). */
async function replicatedVms(nats: Nats): Promise<string[]> {
  const info = await nats.jsm.streams.info(EVT_STREAM, { subjects_filter: "dwcp.evt.replication.>" });
  return Object.keys(info.state.subjects ?? {})
    .map((s) => s.slice(s.lastIndexOf(".") + 1))
    .sort();
}

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err)).slice(0, 300);
