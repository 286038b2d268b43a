import { parentPort } from "node:worker_threads";
import { strongHashSync } from "#native/index.js";

/** A request: BLAKE3 of ranges [offset, length] of a shared buffer. */
export interface HashJob {
  id: number;
  sab: SharedArrayBuffer;
  ranges: Array<[number, number]>;
}

parentPort?.on("message", (job: HashJob) => {
  const buf = Buffer.from(job.sab);
  const out = job.ranges.map(([off, len]) => strongHashSync(buf.subarray(off, off + len)).toString("hex"));
  parentPort?.postMessage({ id: job.id, out });
});
parentPort?.postMessage({ ready: true }); // loaded (tsx and the addon take ~0.3 s): send work
