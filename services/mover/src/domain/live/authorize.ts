import type { LiveRequest, MigrationRequested } from "#schemas/index.js";

/**
 * Why the destination mover `host` must not act on a live request, or undefined when it may:
 * the migration the request names must be a live one (its MigrationRequested, signed by the
 * coordinator) from the request's source host to this host, and a prepare must name the
 * migration's destination directory and VM. Pure; the shell reads the event.
 */
export function liveRequestProblem(
  requested: MigrationRequested | undefined,
  req: LiveRequest,
  host: string,
): string | undefined {
  if (requested === undefined) return `no migration ${req.migrationId} was requested`;
  if (requested.mode !== "live") return `migration ${req.migrationId} is not a live migration`;
  if (requested.destination.host !== host)
    return `migration ${req.migrationId} goes to host ${requested.destination.host}, not to this host (${host})`;
  if (requested.source.host !== req.sourceHost)
    return `migration ${req.migrationId} comes from host ${requested.source.host}, not from ${req.sourceHost}`;
  if (req.op !== "livePrepare") return undefined;
  if (req.destDir !== requested.destination.dir)
    return `migration ${req.migrationId} goes to directory ${requested.destination.dir}, not ${req.destDir}`;
  if (req.definition.name !== requested.vm)
    return `migration ${req.migrationId} moves VM ${requested.vm}, not ${req.definition.name}`;
  return undefined;
}
