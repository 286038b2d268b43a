import { statfs } from "node:fs/promises";
import { availableParallelism, freemem, loadavg, totalmem } from "node:os";
import type { Capacity } from "#schemas/federation.js";

/**
 * This machine's capacity: vCPUs (free = cores minus the 1-minute load average), memory, and the
 * file system holding `dir` (free = available to unprivileged users).
 */
export async function probeCapacity(dir: string): Promise<Capacity> {
  const cores = availableParallelism();
  const fs = await statfs(dir);
  return {
    vcpus: { total: cores, free: Math.max(0, cores - Math.ceil(loadavg()[0] ?? 0)) },
    memoryBytes: { total: totalmem(), free: Math.min(freemem(), totalmem()) },
    diskBytes: { total: fs.blocks * fs.bsize, free: Math.min(fs.bavail, fs.blocks) * fs.bsize },
  };
}
