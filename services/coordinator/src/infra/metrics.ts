import type { StoredEvent } from "#common/event-store.js";
import { gaugeFrom, metrics } from "#common/metrics/registry.js";
import { TERMINAL, type Migration, type MigrationStatus } from "../domain/migration/state.js";

/** The coordinator's view of migrations, read at each scrape. */
interface MigrationView {
  ids(): string[];
  get(id: string): { state: Migration };
}

const ACTIVE: ReadonlySet<MigrationStatus> = new Set(["requested", "planned", "running"]);

/**
 * Migration metrics from the coordinator's projection: migrations by state, and per active
 * migration (a bounded set: they end) its planned and done batches and the seconds since its
 * last event. Counts migrations that end while this coordinator follows the log live.
 */
export class MigrationMetrics {
  /** Last event time (ms) and status of each active migration. */
  private readonly active = new Map<string, { at: number; status: MigrationStatus }>();

  constructor(private readonly view: MigrationView) {
    gaugeFrom(
      { name: "dwcp_migrations", help: "Migrations in the coordinator's view, by state", labelNames: ["state"] },
      () => {
        const counts = new Map<string, number>();
        for (const id of this.view.ids()) {
          const s = this.view.get(id).state.status;
          counts.set(s, (counts.get(s) ?? 0) + 1);
        }
        return [...counts].map(([state, n]) => [{ state }, n]);
      },
    );
    gaugeFrom(
      {
        name: "dwcp_migration_seconds_since_progress",
        help: "Seconds since the last event of each active migration",
        labelNames: ["migration"],
      },
      () => [...this.active].map(([migration, a]) => [{ migration }, Math.max(0, (Date.now() - a.at) / 1000)]),
    );
    gaugeFrom(
      {
        name: "dwcp_migration_batches",
        help: "Batches of each active migration, planned (all) and done",
        labelNames: ["migration", "status"],
      },
      () =>
        [...this.active.keys()].flatMap((migration): Array<[Record<string, string>, number]> => {
          const { batches } = this.view.get(migration).state;
          const done = batches.filter((b) => b.status === "done").length;
          return [
            [{ migration, status: "planned" }, batches.length],
            [{ migration, status: "done" }, done],
          ];
        }),
    );
  }

  /** After the projection folded `e` into migration `id`; `live` once the tail has caught up. */
  folded(id: string, e: StoredEvent, live: boolean): void {
    const status = this.view.get(id).state.status;
    const before = this.active.get(id);
    if (ACTIVE.has(status)) {
      const at = "at" in e.event && typeof e.event.at === "string" ? Date.parse(e.event.at) : Date.now();
      this.active.set(id, { at: Number.isFinite(at) ? at : Date.now(), status });
      return;
    }
    this.active.delete(id);
    if (live && TERMINAL.has(status) && before !== undefined) metrics.migrationsEnded.inc({ outcome: status });
  }
}
