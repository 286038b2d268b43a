/** How many finished finalizes a mover remembers the answer of; the oldest go first. */
const KEPT = 4096;

/**
 * A mover's finalizes, one per migration and destination directory. A retried request (its first
 * copy or reply lost on a connection that died, or the coordinator's wait ran out during a long
 * verify) joins the finalize already running instead of starting a second one, and a request for
 * a finalize that has ended gets its answer again without the volumes being read a second time.
 * A request that says how long it may be held (`holdMs`) is answered "pending" when the finalize
 * outlasts that: the coordinator learns the mover is alive and asks again.
 */
export class Finalizes<R> {
  private readonly running = new Map<string, Promise<R>>();
  private readonly ended = new Map<string, R>();

  constructor(private readonly kept = KEPT) {}

  /** The finalize's answer, or "pending" if `holdMs` is given and passes first. */
  async answer(key: string, holdMs: number | undefined, start: () => Promise<R>): Promise<R | "pending"> {
    const done = this.ended.get(key);
    if (done !== undefined) return done;
    let job = this.running.get(key);
    if (job === undefined) {
      job = start();
      this.running.set(key, job);
      void job.then(
        (r) => this.end(key, r),
        () => this.running.delete(key),
      );
    }
    if (holdMs === undefined) return job;
    let timer: NodeJS.Timeout | undefined;
    const held = new Promise<"pending">((resolve) => {
      timer = setTimeout(() => resolve("pending"), holdMs);
    });
    try {
      return await Promise.race([job, held]);
    } finally {
      clearTimeout(timer);
    }
  }

  private end(key: string, r: R): void {
    this.running.delete(key);
    this.ended.set(key, r);
    if (this.ended.size > this.kept) this.ended.delete(this.ended.keys().next().value as string);
  }
}
