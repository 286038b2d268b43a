import { Worker } from "node:worker_threads";
import { blake3Hex } from "./chunk-store.js";
import type { HashJob } from "./hash-worker.js";

const ENTRY = new URL("./hash-worker.mjs", import.meta.url);

/**
 * BLAKE3 of many buffers on two cores: half of each batch goes to a worker thread (zero-copy,
 * through a SharedArrayBuffer), the other half is hashed here meanwhile. The native kernel runs
 * inline for chunks below 256 KiB, so without this a restore verifies on one core. Should the
 * worker fail, everything is hashed here.
 */
export class HashPool {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(out: string[]): void; reject(err: Error): void }>();

  /** With `worker: false` (small jobs: starting the worker costs ~0.2 s), everything is hashed here. */
  constructor(o: { worker?: boolean } = {}) {
    if (o.worker === false) return;
    try {
      const w = new Worker(ENTRY);
      w.unref();
      w.on("message", (m: { id: number; out: string[] }) => {
        this.pending.get(m.id)?.resolve(m.out);
        this.pending.delete(m.id);
      });
      w.on("error", (err) => this.fail(err));
      w.on("exit", () => this.fail(new Error("hash worker exited")));
      this.worker = w;
    } catch {
      this.worker = undefined;
    }
  }

  private fail(err: Error): void {
    this.worker = undefined;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Hex BLAKE3 of each buffer; buffers that are views of one SharedArrayBuffer are split with the worker. */
  async hashAll(bufs: Buffer[]): Promise<string[]> {
    const sab = bufs[0]?.buffer;
    const shared = this.worker !== undefined && sab instanceof SharedArrayBuffer && bufs.every((b) => b.buffer === sab);
    if (!shared || bufs.length < 2) return Promise.all(bufs.map((b) => blake3Hex(b)));
    const half = Math.ceil(bufs.length / 2);
    const theirs = this.remote(sab, bufs.slice(0, half)).catch(() => Promise.all(bufs.slice(0, half).map((b) => blake3Hex(b))));
    const ours = await Promise.all(bufs.slice(half).map((b) => blake3Hex(b)));
    return [...(await theirs), ...ours];
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
