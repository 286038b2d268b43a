import { statfs } from "node:fs/promises";
import { metrics } from "#common/metrics/registry.js";

/**
 * Free and total bytes of each root's file system, as gauges labelled by the root's index (the
 * order of --root): the index and not the path, so that metrics carry no host paths.
 */
export async function pollRootSpace(roots: readonly string[]): Promise<void> {
  await Promise.all(
    roots.map(async (root, i) => {
      const s = await statfs(root).catch(() => undefined);
      if (s === undefined) return;
      metrics.rootFreeBytes.set({ root: String(i) }, s.bavail * s.bsize);
      metrics.rootSizeBytes.set({ root: String(i) }, s.blocks * s.bsize);
    }),
  );
}
