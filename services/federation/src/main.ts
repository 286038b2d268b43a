import { ConfigError } from "#common/errors.js";
import { withProcessConfig, natsUrlFromEnv } from "#common/config.js";
import { runService } from "#common/lifecycle.js";
import { createLogger } from "#common/logger.js";
import { serviceCredentials } from "#common/nats.js";
import { eventTrustSettings, loadEventTrust } from "#common/signing.js";
import { Site } from "./app/site.js";
import { siteConfig } from "./config.js";

export interface SiteFlags {
  site?: string | undefined;
  peers?: string | undefined;
  nats?: string | undefined;
  "signing-key"?: string | undefined;
  "health-interval"?: string | undefined;
  "data-dir"?: string | undefined;
}

/** The settings of `dwcp site`: its site, peers and server, and the shared process settings. */
export function siteServiceConfig(flags: SiteFlags, env = process.env) {
  return withProcessConfig(() => {
    const interval = flags["health-interval"];
    const healthIntervalMs = interval === undefined ? undefined : Number(interval);
    if (healthIntervalMs !== undefined && !Number.isInteger(healthIntervalMs))
      throw new ConfigError([`--health-interval must be whole milliseconds, got "${interval}"`]);
    if (flags.site === undefined) throw new ConfigError(["--site S is required: this server's site"]);
    return siteConfig({
      site: flags.site,
      natsUrl: flags.nats ?? natsUrlFromEnv(env),
      peers: (flags.peers ?? "").split(",").filter(Boolean),
      dataDir: flags["data-dir"] ?? ".",
      migrations: true,
      ...(healthIntervalMs !== undefined ? { healthIntervalMs } : {}),
    });
  }, env);
}

/**
 * `dwcp site`: site S of a federation until SIGTERM, on its own server as the admin role (it
 * creates its log FED_S, the mirrors of the peers' logs and migration events). It joins, reports
 * its health every interval, and records the cross-site migrations its coordinators complete. It
 * signs its log with `--signing-key` (the site's own `site-<S>` key, whose principal the trust
 * file gives site S), else with the admin's key; it folds an append only when signed by a
 * principal of the site that wrote it.
 */
export async function runSite(flags: SiteFlags): Promise<void> {
  const cfg = siteServiceConfig(flags);
  const log = createLogger("federation");
  const credentials = serviceCredentials(cfg.process, "admin", log);
  const settings = eventTrustSettings();
  const signingKey = flags["signing-key"] ?? settings.nkeyFile;
  const trust = loadEventTrust({ ...settings, nkeyFile: signingKey }, { warn: (msg) => log.warn(msg) });
  const site = new Site(cfg, { log, trust, ...(credentials !== undefined ? { credentials } : {}) });
  await runService({
    log,
    start: () => site.start(),
    stop: () => site.stop(),
  });
}
