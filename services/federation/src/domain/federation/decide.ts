import type { Capacity, FederationEvent, RecordVmMigration, SiteHealth, VmSpec } from "#schemas/federation.js";
import {
  NotVmOwnerError,
  SiteNotJoinedError,
  UnknownSiteError,
  UnknownVmError,
  VmPlacedElsewhereError,
} from "./errors.js";
import { canonicalJson, type FederationView, type VmRecord } from "./state.js";

/** Time and identity arrive from outside: decide reads no clock and no environment. */
export interface DecideContext {
  now: Date;
  /** The deciding site: the only site whose log the events go to. */
  site: string;
}

type Labels = Record<string, string>;

/** What a site asks of its own federation log. MoveVm is the hook for cross-site migration. */
export type FederationCommand =
  | {
      type: "JoinSite";
      health: SiteHealth;
      capacity: Capacity;
      reportIntervalMs: number;
      appendEncodings?: string[];
      endpoint?: string;
      region?: string;
    }
  | {
      type: "ReportHealth";
      health: SiteHealth;
      capacity: Capacity;
      reportIntervalMs: number;
      appendEncodings?: string[];
    }
  | { type: "LeaveSite"; reason: string }
  | { type: "PlaceVm"; vm: string; host?: string; spec?: VmSpec; labels?: Labels }
  | { type: "MoveVm"; vm: string; to: string; host?: string; migrationId?: string }
  | { type: "RemoveVm"; vm: string }
  | RecordVmMigration;

/**
 * Pure: the events `command` adds to the deciding site's log, numbered after the last one folded.
 * Repeating a command whose effect is already in the view yields no events.
 */
export function decide(view: FederationView, command: FederationCommand, ctx: DecideContext): FederationEvent[] {
  const self = view.sites[ctx.site];
  const joined = self?.status === "joined";
  const base = { version: 1 as const, site: ctx.site, seq: (self?.lastSeq ?? 0) + 1, at: ctx.now.toISOString() };
  switch (command.type) {
    case "JoinSite": {
      if (joined) return [];
      const { type: _t, ...rest } = command;
      return [{ type: "SiteJoined", ...base, ...rest }];
    }
    case "ReportHealth": {
      if (!joined) throw new SiteNotJoinedError(ctx.site);
      const { type: _t, ...rest } = command;
      return [{ type: "SiteHealthReported", ...base, ...rest }];
    }
    case "LeaveSite":
      return joined ? [{ type: "SiteLeft", ...base, reason: command.reason }] : [];
    case "PlaceVm": {
      if (!joined) throw new SiteNotJoinedError(ctx.site);
      const current = placed(view, command.vm);
      if (current && current.site !== ctx.site) throw new VmPlacedElsewhereError(command.vm, current.site);
      const { type: _t, ...rest } = command;
      if (current && sameDetails(current, rest)) return [];
      return [{ type: "VmPlaced", ...base, ...rest }];
    }
    case "MoveVm":
      return decideMove(view, command, ctx, base, joined);
    case "RecordVmMigration":
      return decideMigrated(view, command, ctx, base, joined);
    case "RemoveVm": {
      if (!joined) throw new SiteNotJoinedError(ctx.site);
      const current = placed(view, command.vm);
      if (!current) return [];
      if (current.site !== ctx.site) throw new NotVmOwnerError(command.vm, ctx.site, current.site);
      return [{ type: "VmRemoved", ...base, vm: command.vm }];
    }
    default: {
      const never: never = command;
      return never;
    }
  }
}

function decideMove(
  view: FederationView,
  command: Extract<FederationCommand, { type: "MoveVm" }>,
  ctx: DecideContext,
  base: { version: 1; site: string; seq: number; at: string },
  joined: boolean,
): FederationEvent[] {
  if (!joined) throw new SiteNotJoinedError(ctx.site);
  const current = placed(view, command.vm);
  if (!current) throw new UnknownVmError(command.vm);
  if (current.site === command.to) return [];
  if (ctx.site !== current.site && ctx.site !== command.to)
    throw new NotVmOwnerError(command.vm, ctx.site, current.site);
  if (view.sites[command.to]?.status !== "joined") throw new UnknownSiteError(command.to);
  const { type: _t, ...rest } = command;
  return [{ type: "VmMoved", ...base, ...rest, from: current.site, spec: current.spec, labels: current.labels }];
}

/**
 * A completed cross-site migration, recorded by its source site. The claim's time is the
 * completion time, not the decision's: the VM changed site when the migration completed, so a
 * later move elsewhere still wins, and a record replayed after a restart finds its own claim
 * (or a later one) and decides nothing. A VM the view does not place (never placed, or removed
 * before the migration completed) moves from the recording site.
 */
function decideMigrated(
  view: FederationView,
  command: RecordVmMigration,
  ctx: DecideContext,
  base: { version: 1; site: string; seq: number; at: string },
  joined: boolean,
): FederationEvent[] {
  if (!joined) throw new SiteNotJoinedError(ctx.site);
  if (migrationRecorded(view, command.vm, command.completedAt) || command.to === ctx.site) return [];
  const current = placed(view, command.vm);
  if (current?.site === command.to) return [];
  if (current && current.site !== ctx.site) throw new NotVmOwnerError(command.vm, ctx.site, current.site);
  if (view.sites[command.to]?.status !== "joined") throw new UnknownSiteError(command.to);
  const { vm, to, host, migrationId, completedAt } = command;
  return [
    {
      type: "VmMoved",
      ...base,
      at: completedAt,
      vm,
      from: ctx.site,
      to,
      host,
      migrationId,
      spec: current?.spec,
      labels: current?.labels,
    },
  ];
}

/** True when the view holds a claim on `vm` made at or after `completedAt`: nothing left to record. */
export function migrationRecorded(view: FederationView, vm: string, completedAt: string): boolean {
  const current = view.vms[vm];
  return current !== undefined && Date.parse(current.at) >= Date.parse(completedAt);
}

function placed(view: FederationView, vm: string): VmRecord | undefined {
  const r = view.vms[vm];
  return r?.status === "placed" ? r : undefined;
}

function sameDetails(r: VmRecord, c: { host?: string; spec?: VmSpec; labels?: Labels }): boolean {
  return (
    r.host === c.host &&
    canonicalJson(r.spec ?? null) === canonicalJson(c.spec ?? null) &&
    canonicalJson(r.labels ?? null) === canonicalJson(c.labels ?? null)
  );
}
