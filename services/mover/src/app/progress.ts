import type { TransferredChunk } from "#schemas/index.js";
import type { NatsConnection } from "@nats-io/transport-node";
import { publishProgress } from "#common/progress.js";
import type { EventTrust } from "#common/signing.js";

/** How often a moving batch reports its progress, at most. */
export const PROGRESS_INTERVAL_MS = 250;

/**
 * Counts one batch attempt's acknowledged chunks and publishes a BatchProgress at most every
 * PROGRESS_INTERVAL_MS while they come (the last count within that interval after the last ack),
 * the first one PROGRESS_INTERVAL_MS after the batch started. A batch that ends sooner reports
 * nothing: its ChunkBatchTransferred follows at once and says as much (for small migrations a
 * signed report per batch that nobody needed).
 */
export class BatchProgressReporter {
  private readonly counted = new Set<number>();
  private chunks = 0;
  private dataBytes = 0;
  private zeroBytes = 0;
  private wireBytes = 0;
  /** When the last report went out, or the batch started. */
  private lastSent = Date.now();
  private reported = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly trust: EventTrust,
    private readonly batch: { migrationId: string; batch: number; attempt: number; host: string },
  ) {}

  /** A chunk the destination acknowledged (once per offset: a resend's ack counts once). */
  readonly onChunk = (c: TransferredChunk): void => {
    if (this.counted.has(c.offset)) return;
    this.counted.add(c.offset);
    this.chunks += 1;
    if (c.zero) this.zeroBytes += c.length;
    else this.dataBytes += c.length;
    this.wireBytes += c.wireBytes;
    const wait = this.lastSent + PROGRESS_INTERVAL_MS - Date.now();
    if (wait <= 0) this.publish();
    else this.timer ??= setTimeout(() => this.publish(), wait);
  };

  /**
   * The batch ended: a report still held back is sent now (`flush`) if an earlier one went out
   * (so that a reader does not stay on a partial count), then no more.
   */
  stop(flush = false): void {
    const pending = this.timer !== undefined;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (flush && pending && this.reported) this.publish();
  }

  private publish(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.lastSent = Date.now();
    this.reported = true;
    publishProgress(this.nc, this.trust, {
      type: "BatchProgress",
      version: 1,
      ...this.batch,
      chunks: this.chunks,
      bytes: this.dataBytes + this.zeroBytes,
      dataBytes: this.dataBytes,
      zeroBytes: this.zeroBytes,
      wireBytes: this.wireBytes,
      at: new Date().toISOString(),
    });
  }
}
