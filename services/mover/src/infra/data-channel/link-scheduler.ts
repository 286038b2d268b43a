import { LinkShare } from "../../domain/data-channel/link-share.js";
import { newTokenBucket, reserve, setRate, type TokenBucket } from "../../domain/data-channel/token-bucket.js";

/**
 * One link's turns (this mover to one destination mover): every chunk a batch sends over it waits
 * for a grant, and grants go out at the link's rate, to the highest priority waiting and, among
 * equals, by weight (domain/data-channel/link-share.ts). Pacing the link at its known rate keeps
 * the bottleneck's queue empty, so what each migration is granted is what it gets through. The
 * turns are work-conserving: a grant goes to a request that is waiting, never held for a flow
 * between two chunks (on a long link a sender's next request often waits for its socket to
 * drain, and holding its turn left the link idle; the weights of migrations that share a source
 * host come from the order of its work queue, see the coordinator's fair-share.ts).
 */
class LinkScheduler {
  private readonly share = new LinkShare<Grant>();
  private readonly bucket: TokenBucket;
  private debtTimer: NodeJS.Timeout | undefined;
  /** Batches sending per migration: its flow is forgotten after the last one. */
  readonly users = new Map<string, number>();

  constructor(rateBytesPerSec: number) {
    this.bucket = newTokenBucket(rateBytesPerSec, performance.now());
  }

  set rate(bytesPerSec: number) {
    if (bytesPerSec !== this.bucket.rateBytesPerSec) setRate(this.bucket, bytesPerSec, performance.now());
  }

  setShare(flow: string, weight: number | undefined, priority: number | undefined): void {
    this.share.set(flow, weight, priority);
  }

  forget(flow: string): void {
    this.share.forget(flow);
    this.pump();
  }

  /** Resolves when `bytes` of `flow` may go on the wire; an aborted wait rejects and uses nothing. */
  turn(flow: string, bytes: number, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const grant: Grant = { resolve, cancelled: false };
      const onAbort = (): void => {
        grant.cancelled = true;
        reject(signal.reason as Error);
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      grant.resolve = () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      this.share.add({ flow, bytes, value: grant });
      this.pump();
    });
  }

  /** Grants while the link has no debt; otherwise waits until it is paid. */
  private pump(): void {
    if (this.debtTimer !== undefined) return;
    for (;;) {
      const now = performance.now();
      const waitMs = reserve(this.bucket, 0, now);
      if (waitMs > 0) {
        this.debtTimer = setTimeout(() => {
          this.debtTimer = undefined;
          this.pump();
        }, waitMs);
        return;
      }
      const next = this.share.next();
      if (next === undefined) return;
      if (next.value.cancelled) continue;
      reserve(this.bucket, next.bytes, now);
      next.value.resolve();
    }
  }
}

interface Grant {
  resolve: () => void;
  cancelled: boolean;
}

const schedulers = new Map<string, LinkScheduler>();

/** What a batch's chunks wait on: a turn on its link, or nothing when the link's rate is unknown. */
export type LinkTurn = (bytes: number, signal: AbortSignal) => Promise<void>;

/**
 * Runs `fn` as one batch of `migrationId` on the link to `address`, paced at `rateBytesPerSec`
 * (undefined: the link's rate is unknown, and the batch sends without turns).
 */
export async function onLink<T>(
  address: string,
  rateBytesPerSec: number | undefined,
  migrationId: string,
  share: { weight?: number | undefined; priority?: number | undefined },
  fn: (turn: LinkTurn | undefined) => Promise<T>,
): Promise<T> {
  if (rateBytesPerSec === undefined) return fn(undefined);
  let link = schedulers.get(address);
  if (link === undefined) {
    link = new LinkScheduler(rateBytesPerSec);
    schedulers.set(address, link);
  }
  link.rate = rateBytesPerSec;
  const scheduler = link;
  // The batch's values are the newest its mover knows (the migration watch's over the work item's).
  scheduler.setShare(migrationId, share.weight, share.priority);
  scheduler.users.set(migrationId, (scheduler.users.get(migrationId) ?? 0) + 1);
  try {
    return await fn((bytes, signal) => scheduler.turn(migrationId, bytes, signal));
  } finally {
    const left = (scheduler.users.get(migrationId) ?? 1) - 1;
    if (left > 0) scheduler.users.set(migrationId, left);
    else {
      scheduler.users.delete(migrationId);
      scheduler.forget(migrationId);
    }
  }
}

/**
 * A running migration's new weight and priority (undefined: the default), for its batches sending
 * from this process now, from their next chunk on. Later batches carry the values in their options.
 */
export function setMigrationShare(migrationId: string, weight: number | undefined, priority: number | undefined): void {
  for (const s of schedulers.values()) if (s.users.has(migrationId)) s.setShare(migrationId, weight, priority);
}
