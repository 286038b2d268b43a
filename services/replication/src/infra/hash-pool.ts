import { Worker } from "node:worker_threads";
import { blake3Hex } from "./chunk-store.js";
import type { HashJob } from "./hash-worker.js";

/** The compiled worker, or from the sources (tests) a plain-JavaScript entry that registers tsx. */
const ENTRY = new URL(import.meta.url.endsWith(".ts") ? "./hash-worker.mjs" : "./hash-worker.js", import.meta.url);

/**
 * BLAKE3 of many buffers on a worker thread (zero-copy, through a SharedArrayBuffer), so that the
 * main thread keeps issuing a restore's reads and writes while a span is verified. The native
 * kernel runs inline for chunks below 256 KiB: hashing half of each span here, as this once did,
 * held the event loop ~2 ms per span. Until the worker has loaded (~0.3 s), and should it fail,
 * everything is hashed here.
 */
export class HashPool {
  private worker: Worker | undefined;
  private ready = false;
  private markReady: (ok: boolean) => void = () => undefined;
  /** Resolves true once the worker takes work, false if there is none or it failed. */
  readonly started: Promise<boolean> = new Promise((resolve) => (this.markReady = resolve));
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(out: string[]): void; reject(err: Error): void }>();

  /** With `worker: false` (small jobs: starting the worker costs ~0.2 s), everything is hashed here. */
  constructor(o: { worker?: boolean } = {}) {
    if (o.worker === false) {
      this.markReady(false);
      return;
    }
    try {
      const w = new Worker(ENTRY);
      w.unref();
      w.on("message", (m: { id: number; out: string[] } | { ready: true }) => {
        if ("ready" in m) {
          this.ready = true;
          this.markReady(true);
          return;
        }
        this.pending.get(m.id)?.resolve(m.out);
        this.pending.delete(m.id);
      });
      w.on("error", (err) => this.fail(err));
      w.on("exit", () => this.fail(new Error("hash worker exited")));
      this.worker = w;
    } catch {
      this.worker = undefined;
      this.markReady(false);
    }
  }

  private fail(err: Error): void {
    this.worker = undefined;
    this.markReady(false);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Hex BLAKE3 of each buffer; buffers that are views of one SharedArrayBuffer are hashed by the worker. */
  async hashAll(bufs: Buffer[]): Promise<string[]> {
    const sab = bufs[0]?.buffer;
    const shared =
      this.worker !== undefined &&
      this.ready &&
      sab instanceof SharedArrayBuffer &&
      bufs.every((b) => b.buffer === sab);
    const here = (): Promise<string[]> => Promise.all(bufs.map((b) => blake3Hex(b)));
    return shared ? this.remote(sab, bufs).catch(here) : here();
  }

  private remote(sab: SharedArrayBuffer, bufs: Buffer[]): Promise<string[]> {
    const w = this.worker;
    if (!w) return Promise.reject(new Error("no hash worker"));
    const job: HashJob = { id: this.nextId++, sab, ranges: bufs.map((b) => [b.byteOffset, b.length]) };
    return new Promise((resolve, reject) => {
      this.pending.set(job.id, { resolve, reject });
      w.postMessage(job);
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }
}
