/**
 * A mover's slots for large batches: at most `concurrency` sending, and at most as many again
 * that have handed their last chunk to the kernel and only wait for the destination's
 * acknowledgements (their tail: the last bytes crossing the link, the destination's fsync, the
 * BATCH_OK round trip). A batch gives up its sending slot when it says it has sent everything,
 * or when it ends, whichever comes first; so over a long link the next batch starts while the
 * previous one's tail is still in flight, and the link does not fall idle between batches.
 */
export class LargeSlots {
  private readonly sending = new Set<Promise<void>>();
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly concurrency: number) {}

  /** Batches that may start now. */
  get room(): number {
    return Math.min(this.concurrency - this.sending.size, this.concurrency * 2 - this.running.size);
  }

  /** Resolves when a batch has sent everything or ended (room may have grown). */
  changed(): Promise<void> {
    return Promise.race([...this.sending, ...this.running]);
  }

  /**
   * Runs `work` in a slot. `work` gets `sent`, to call once every chunk is on its way; the
   * returned promise is the work's own.
   */
  run(work: (sent: () => void) => Promise<void>): Promise<void> {
    let sent: () => void = () => undefined;
    const slot: Promise<void> = new Promise<void>((resolve) => {
      sent = resolve;
    }).then(() => void this.sending.delete(slot));
    const task: Promise<void> = work(sent).finally(() => {
      sent();
      this.running.delete(task);
    });
    this.sending.add(slot);
    this.running.add(task);
    return task;
  }
}
