import { parentPort, workerData } from "node:worker_threads";
import { BackupCorruptError } from "../domain/errors.js";
import { foldBackup, type ReplayJob, type ReplayResult } from "./replay.js";

// One partition of a partitioned `replayBackup`: fold it, answer its parts or why it failed.
const job = workerData as ReplayJob;
let answer: ReplayResult;
try {
  answer = { ok: true, parts: (await foldBackup(job.file, job.opts, job.part)).parts };
} catch (e) {
  answer =
    e instanceof BackupCorruptError
      ? { ok: false, message: e.message, corrupt: { file: e.file, line: e.line, detail: e.detail } }
      : { ok: false, message: e instanceof Error ? e.message : String(e) };
}
parentPort?.postMessage(answer);
