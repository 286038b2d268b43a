import { DeliverPolicy } from "@nats-io/jetstream";
import { EVT_STREAM } from "#common/layout.js";
import type { Nats } from "#common/nats.js";

export interface Ack {
  n: number;
  seq: number;
  /** performance.now() when the ack arrived. */
  at: number;
}

/**
 * A writer that counts what JetStream acknowledged: it publishes numbered messages to a subject
 * of the DWCP_EVT stream (outside dwcp.evt.migration.>, so services ignore them), one at a time,
 * resending each with the same msgID after any error (TimeoutError, JetStreamNotEnabled, 503
 * during elections) until it is acknowledged. Afterwards every acknowledged number must be in
 * the stream exactly once.
 */
export class Prober {
  readonly acked: Ack[] = [];
  errors = 0;
  private running = false;
  private loop: Promise<void> | undefined;
  private waiters: Array<{ after: number; resolve: (a: Ack) => void }> = [];

  constructor(
    private readonly nats: Nats,
    readonly subject: string,
    /** Pause between acknowledged publishes (pacing, not synchronisation). */
    private readonly paceMs = 10,
    /**
     * How long one publish waits for its ack before it is resent. Short, so that the prober
     * measures when the cluster accepts writes again rather than its own retry cadence: a
     * publish that went to a server as it died is only given up after this long (with 2 s, up to
     * 2.1 s of a measured write pause was the prober waiting out such a publish).
     */
    private readonly publishTimeoutMs = 500,
  ) {}

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /** The first ack that arrives after `t` (performance.now()). */
  async ackAfter(t: number, timeoutMs = 60_000): Promise<Ack> {
    const seen = this.acked.find((a) => a.at > t);
    if (seen) return seen;
    return new Promise<Ack>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no acknowledged write within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({ after: t, resolve: (a) => (clearTimeout(timer), resolve(a)) });
    });
  }

  /** Longest time without an ack, in ms, between `from` and `to` (performance.now()). */
  maxGap(from: number, to: number): number {
    const times = [from, ...this.acked.map((a) => a.at).filter((t) => t > from && t < to), to];
    return Math.max(...times.slice(1).map((t, i) => t - (times[i] ?? t)));
  }

  /** Reads the subject back: numbers acknowledged but missing, and numbers stored more than once. */
  async audit(): Promise<{ stored: number; lost: number[]; duplicates: number[] }> {
    const counts = new Map<number, number>();
    const info = await this.nats.jsm.streams.info(EVT_STREAM, { subjects_filter: this.subject });
    const total = info.state.subjects?.[this.subject] ?? 0;
    if (total > 0) {
      const consumer = await this.nats.js.consumers.get(EVT_STREAM, {
        filter_subjects: this.subject,
        deliver_policy: DeliverPolicy.All,
      });
      const iter = await consumer.consume();
      let read = 0;
      for await (const m of iter) {
        const n = Number(m.string());
        counts.set(n, (counts.get(n) ?? 0) + 1);
        if (++read >= total) break;
      }
      iter.stop();
    }
    const lost = this.acked.filter((a) => !counts.has(a.n)).map((a) => a.n);
    const duplicates = [...counts].filter(([, c]) => c > 1).map(([n]) => n);
    return { stored: total, lost, duplicates };
  }

  private async run(): Promise<void> {
    for (let n = 1; this.running; n++) {
      for (;;) {
        try {
          const ack = await this.nats.js.publish(this.subject, String(n), {
            msgID: `${this.subject}-${n}`,
            timeout: this.publishTimeoutMs,
          });
          const a = { n, seq: ack.seq, at: performance.now() };
          this.acked.push(a);
          for (const w of this.waiters.filter((x) => a.at > x.after)) w.resolve(a);
          this.waiters = this.waiters.filter((x) => !(a.at > x.after));
          break;
        } catch {
          this.errors++;
          if (!this.running) return;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      await new Promise((r) => setTimeout(r, this.paceMs));
    }
  }
}
