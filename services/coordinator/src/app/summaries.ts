import type { MigrationSummary } from "#schemas/index.js";
import type { Logger } from "#common/logger.js";
import type { Nats } from "#common/nats.js";
import type { EventTrust } from "#common/signing.js";
import { publishSummaries, readSummaries } from "#common/summaries.js";
import { summaryOf, type FoldedPosition } from "../domain/migration/summary.js";
import type { Migration } from "../domain/migration/state.js";

/** How soon a migration whose state changed is summarised, and how often one only making progress is. */
const STATE_CHANGE_DELAY_MS = 50;
const PROGRESS_INTERVAL_MS = 1_000;

/**
 * Keeps DWCP_SUMMARY current from the coordinator's projection: counts the messages folded per
 * migration and, once the projection has caught up, publishes the summary of each migration that
 * changed, coalesced (a state change within ~50 ms, progress at most once a second per flush).
 * Summaries are a read model: a reader that finds one stale (its message count behind the event
 * subject's) folds the events instead, so a lost or late summary costs time, never truth.
 */
export class SummaryPublisher {
  private readonly positions = new Map<string, FoldedPosition>();
  private readonly published = new Map<string, { messages: number; state: string }>();
  private readonly dirty = new Set<string>();
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
    const p = this.positions.get(id) ?? { messages: 0, lastSeq: 0 };
    if (seq <= p.lastSeq) return;
    this.positions.set(id, { messages: p.messages + 1, lastSeq: seq });
    if (!this.running) return;
    this.dirty.add(id);
    const changed = this.published.get(id)?.state !== this.view(id).status;
    this.scheduleFlush(changed ? STATE_CHANGE_DELAY_MS : PROGRESS_INTERVAL_MS);
  }

  /**
   * The projection caught up: publish the summary of every migration whose stored summary is
   * missing or behind, then keep them current.
   */
  async start(): Promise<void> {
    const stored = await readSummaries(this.nats, this.trust, (subject, why) =>
      this.log.warn({ subject, why }, "summary not believed; it will be replaced"),
    );
    for (const [id, s] of stored) this.published.set(id, { messages: s.messages, state: s.state });
    for (const [id, p] of this.positions) if (stored.get(id)?.messages !== p.messages) this.dirty.add(id);
    this.running = true;
    await this.flush();
  }

  /** Publishes what is pending and stops. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.flush().catch((err: unknown) => this.log.warn({ err }, "summaries not published at stop"));
  }

  private scheduleFlush(delayMs: number): void {
    const dueAt = Date.now() + delayMs;
    if (this.timer !== undefined && this.timerDueAt <= dueAt) return;
    clearTimeout(this.timer);
    this.timerDueAt = dueAt;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush().catch((err: unknown) => {
        this.log.warn({ err }, "summaries not published; retrying");
        if (this.running) this.scheduleFlush(PROGRESS_INTERVAL_MS);
      });
    }, delayMs);
  }

  /** One flush at a time: the summaries of every migration marked since the last. */
  private flush(): Promise<void> {
    this.flushing = this.flushing
      .catch(() => undefined)
      .then(async () => {
        const ids = [...this.dirty];
        this.dirty.clear();
        const summaries: MigrationSummary[] = [];
        for (const id of ids) {
          const position = this.positions.get(id);
          if (position !== undefined) summaries.push(summaryOf(this.view(id), position));
        }
        try {
          await publishSummaries(this.nats, this.trust, summaries);
        } catch (err) {
          for (const id of ids) this.dirty.add(id);
          throw err;
        }
        for (const s of summaries) this.published.set(s.migrationId, { messages: s.messages, state: s.state });
      });
    return this.flushing;
  }
}
