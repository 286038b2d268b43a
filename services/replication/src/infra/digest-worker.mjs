// Worker thread for backup-file.ts: the SHA-256 of a backup file up to the start of its last line
// (the trailer), computed on another core while the main thread parses and folds the lines.
// Plain JavaScript: it needs only node:crypto and node:fs.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { parentPort, workerData } from "node:worker_threads";

const TAIL = 1 << 16;
const file = workerData.file;
const fh = await open(file, "r");
const size = (await fh.stat()).size;
const tail = Buffer.alloc(Math.min(TAIL, size));
await fh.read(tail, 0, tail.length, size - tail.length);
await fh.close();
let end = tail.length;
if (end > 0 && tail[end - 1] === 10) end--; // the file's final newline
const nl = tail.lastIndexOf(10, end - 1);
if (nl < 0 && tail.length < size) {
  parentPort.postMessage({ ok: false }); // a last line longer than the tail read: the caller digests
} else {
  const upTo = size - tail.length + nl + 1;
  const h = createHash("sha256");
  if (upTo > 0)
    for await (const chunk of createReadStream(file, { start: 0, end: upTo - 1, highWaterMark: 1 << 20 }))
      h.update(chunk);
  parentPort.postMessage({ ok: true, sha256: h.digest("hex"), upTo });
}
