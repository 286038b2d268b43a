/**
 * The volumes this mover process finalized, by `.part` path and migration: a batch of such a
 * migration arriving later comes from a stale sender. Without `incremental` the final file's
 * existence says so; an incremental migration's final file exists from the start (its base), so
 * its stale batches are recognised here instead, and are fenced rather than allowed to leave a
 * `.part` behind or write into the `.part` of a later migration of the same volume. In-process
 * only (a restarted mover forgets), and bounded: the oldest entries go first.
 */
const KEPT = 4096;
const finalized = new Set<string>();

const keyOf = (partPath: string, migrationId: string): string => `${migrationId}\0${partPath}`;

export function rememberFinalized(partPath: string, migrationId: string): void {
  const key = keyOf(partPath, migrationId);
  finalized.delete(key);
  finalized.add(key);
  if (finalized.size > KEPT) finalized.delete(finalized.values().next().value as string);
}

export function wasFinalized(partPath: string, migrationId: string): boolean {
  return finalized.has(keyOf(partPath, migrationId));
}
