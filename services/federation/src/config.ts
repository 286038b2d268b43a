import { z } from "zod";
import { SiteId } from "#schemas/federation.js";
import { loadConfig } from "#common/config.js";

/** Default interval between a site's health reports. */
export const DEFAULT_HEALTH_INTERVAL_MS = 5_000;

/** Bytes per message when a batch of events is appended; 0: one event per message. Default 64 KiB. */
const maxAppendBytes = z
  .number()
  .int()
  .min(0)
  .max(192 * 1024)
  .default(64 * 1024);

const SiteConfig = z.object({
  /** The site id; also its JetStream domain. */
  site: SiteId,
  /** The site's own nats-server (never another site's). */
  natsUrl: z.string().min(1),
  /** Other sites whose logs this site's view sources. */
  peers: z.array(SiteId).default([]),
  /** Interval between health reports in ms; 0 turns periodic reports off. Default 5000. */
  healthIntervalMs: z.number().int().min(0).default(DEFAULT_HEALTH_INTERVAL_MS),
  /** Directory whose file system the disk capacity figures describe. Default: the working directory. */
  dataDir: z.string().min(1).default("."),
  /** Attempts per command when appends race or time out (the first one included). Default 3. */
  appendAttempts: z.number().int().min(1).max(10).default(3),
  /** Bytes per message when a batch of events is appended; 0: one event per message. Default 64 KiB. */
  maxAppendBytes,
  /** How long an append waits for JetStream's acknowledgement. Default 10 000 ms. */
  appendTimeoutMs: z.number().int().min(100).default(10_000),
  endpoint: z.string().max(512).optional(),
  region: z.string().max(64).optional(),
  /**
   * The site also runs migrations (a dwcp stack on its server): mirror every peer's migration
   * events (DWCP_EVTM_<peer>) and record completed cross-site migrations as VM moves. Needs the
   * site's streams (`dwcp init`) before start(). Default false.
   */
  migrations: z.boolean().default(false),
});
export type SiteConfig = z.infer<typeof SiteConfig>;
export type SiteConfigInput = z.input<typeof SiteConfig>;

export const siteConfig = (input: SiteConfigInput): Readonly<SiteConfig> => loadConfig(SiteConfig, input);

const FederationConfig = z.object({
  /** A number of sites (named site1..siteN) or their ids. */
  sites: z.union([
    z.number().int().min(1).max(26),
    z
      .array(SiteId)
      .min(1)
      .max(26)
      .refine((ids) => new Set(ids).size === ids.length, { message: "site ids must be unique" }),
  ]),
  /** Where every server keeps its config, log and JetStream store (one subdirectory each). */
  dataDir: z.string().min(1),
  /**
   * "hub": a stateless hub server that every site dials (default). "star": the first site is
   * the hub; one process fewer, but cutting it cuts every site off.
   */
  topology: z.enum(["hub", "star"]).default("hub"),
  healthIntervalMs: z.number().int().min(0).default(DEFAULT_HEALTH_INTERVAL_MS),
  /**
   * Route each leafnode link through a LinkProxy in this process so that partition()/heal() can
   * cut it (default true). Off, sites dial the hub directly: no relay in the data path.
   */
  partitionable: z.boolean().default(true),
  /** Passed to every Site (see SiteConfig.maxAppendBytes). */
  maxAppendBytes,
  /**
   * Create every site's dwcp streams (R1) before the Sites start, and start the Sites with
   * `migrations: true`, for a federation whose sites run coordinators and movers. Default false.
   */
  migrations: z.boolean().default(false),
});
export type FederationConfig = z.infer<typeof FederationConfig>;
export type FederationConfigInput = z.input<typeof FederationConfig>;

export const federationConfig = (input: FederationConfigInput): Readonly<FederationConfig> =>
  loadConfig(FederationConfig, input);

export const siteIds = (sites: number | readonly string[]): string[] =>
  typeof sites === "number" ? Array.from({ length: sites }, (_, i) => `site${i + 1}`) : [...sites];
