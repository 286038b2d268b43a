import { SUMMARY_PAGE_SIZE, type MigrationSummaryPage } from "#schemas/index.js";
import type { Logger } from "#common/logger.js";
import { retryTransient, type Nats } from "#common/nats.js";
import type { EventTrust } from "#common/signing.js";
import { publishPages, readPages } from "#common/summaries.js";
import { summaryOf, type FoldedPosition } from "../domain/migration/summary.js";
import type { Migration } from "../domain/migration/state.js";

/** How soon a page whose migration changed state is republished, and how often one only making progress is. */
const STATE_CHANGE_DELAY_MS = 50;
const PROGRESS_INTERVAL_MS = 1_000;
/**
 * The least time between two publishes of one page. A page holds 256 summaries (~80 KB of JSON to
 * build, sign, send and store): with hundreds of migrations changing state at once, republishing
 * each page every 50 ms was a tenth of a coordinator's CPU and most of what it wrote to NATS.
 */
const PAGE_MIN_INTERVAL_MS = 500;

/**
 * Keeps DWCP_SUMMARY current from the coordinator's projection: counts the messages folded per
 * migration, places each migration on a page in the order the log first names it (the same order
 * in every coordinator, which all tail the same log) and, once the projection has caught up,
 * republishes each page one of whose migrations changed, coalesced (a state change within
 * ~50 ms, progress at most about once a second). Summaries are a read model: a reader that finds
 * one stale (its message count behind the event subject's) folds the events instead, so a lost
 * or late page costs time, never truth.
 */
export class SummaryPublisher {
  private readonly positions = new Map<string, FoldedPosition & { index: number }>();
  private readonly pages: string[][] = [];
  private readonly publishedState = new Map<string, string>();
  /** Dirty page → when it is to be published (epoch ms). */
  private readonly dirty = new Map<number, number>();
  private readonly publishedAt = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;
  private timerDueAt = 0;
  private running = false;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly nats: Nats,
    private readonly trust: EventTrust,
    private readonly view: (id: string) => Migration,
    private readonly log: Logger,
  ) {}

  /** The projection folded the message at `seq` of migration `id` (in stream order). */
  folded(id: string, seq: number): void {
    let p = this.positions.get(id);
    if (p === undefined) {
      p = { messages: 0, lastSeq: 0, index: this.positions.size };
      const page = Math.floor(p.index / SUMMARY_PAGE_SIZE);
      (this.pages[page] ??= []).push(id);
    }
    if (seq <= p.lastSeq) return;
    this.positions.set(id, { ...p, messages: p.messages + 1, lastSeq: seq });
    if (!this.running) return;
    const page = Math.floor(p.index / SUMMARY_PAGE_SIZE);
    const changed = this.publishedState.get(id) !== this.view(id).status;
    const now = Date.now();
    const dueAt = Math.max(
      now + (changed ? STATE_CHANGE_DELAY_MS : PROGRESS_INTERVAL_MS),
      (this.publishedAt.get(page) ?? 0) + PAGE_MIN_INTERVAL_MS,
    );
    const due = this.dirty.get(page);
    if (due !== undefined && due <= dueAt) return;
    this.dirty.set(page, dueAt);
    this.scheduleFlush(dueAt - now);
  }

  /**
   * The projection caught up: republish every page that is missing, not the coordinator's, or
   * behind the log for any of its migrations; then keep them current.
   */
  async start(): Promise<void> {
    const stored = new Map<number, MigrationSummaryPage>();
    const pages = await retryTransient(() =>
      readPages(this.nats, this.trust, (subject, why) =>
        this.log.warn({ subject, why }, "summary page not believed; it will be replaced"),
      ),
    );
    for (const page of pages) stored.set(page.page, page);
    for (const [n, ids] of this.pages.entries()) {
      const summaries = stored.get(n)?.summaries ?? [];
      for (const s of summaries) this.publishedState.set(s.migrationId, s.state);
      const current =
        summaries.length === ids.length &&
        summaries.every(
          (s, i) => s.migrationId === ids[i] && s.messages === this.positions.get(s.migrationId)?.messages,
        );
      if (!current) this.dirty.set(n, 0);
    }
    this.running = true;
    await this.flush(Infinity);
  }

  /** Publishes what is pending and stops. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.flush(Infinity).catch((err: unknown) => this.log.warn({ err }, "summaries not published at stop"));
  }

  private scheduleFlush(delayMs: number): void {
    const dueAt = Date.now() + delayMs;
    if (this.timer !== undefined && this.timerDueAt <= dueAt) return;
    clearTimeout(this.timer);
    this.timerDueAt = dueAt;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.flush(Date.now()).then(
          () => {
            // Pages not yet due when this timer fired.
            const next = Math.min(...this.dirty.values());
            if (this.running && Number.isFinite(next)) this.scheduleFlush(next - Date.now());
          },
          (err: unknown) => {
            this.log.warn({ err }, "summaries not published; retrying");
            if (this.running) this.scheduleFlush(PROGRESS_INTERVAL_MS);
          },
        );
      },
      Math.max(0, delayMs),
    );
  }

  /** One flush at a time: the pages marked since the last that are due by `until` (epoch ms). */
  private flush(until: number): Promise<void> {
    this.flushing = this.flushing
      .catch(() => undefined)
      .then(async () => {
        const numbers = [...this.dirty].filter(([, dueAt]) => dueAt <= until).map(([page]) => page);
        for (const n of numbers) this.dirty.delete(n);
        const at = Date.now();
        const pages = numbers.map((page): MigrationSummaryPage => {
          const summaries = (this.pages[page] ?? []).flatMap((id) => {
            const p = this.positions.get(id);
            return p === undefined ? [] : [summaryOf(this.view(id), p)];
          });
          return { type: "MigrationSummaryPage", version: 1, page, summaries };
        });
        try {
          await publishPages(this.nats, this.trust, pages);
        } catch (err) {
          for (const n of numbers) if (!this.dirty.has(n)) this.dirty.set(n, 0);
          throw err;
        }
        for (const n of numbers) this.publishedAt.set(n, at);
        for (const p of pages) for (const s of p.summaries) this.publishedState.set(s.migrationId, s.state);
      });
    return this.flushing;
  }
}
