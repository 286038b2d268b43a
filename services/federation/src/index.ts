// The federation's public surface: what the CLI and the coordinator import.
export {
  startFederation,
  siteIdentity,
  LinksNotCuttableError,
  PlacementUnsupportedError,
  type FederationHandle,
  type ServerPlacement,
  type FederationSite,
} from "./app/federation.js";
export {
  federationStatus,
  buildReport,
  renderStatus,
  NotAFederationSiteError,
  SiteUnreachableError,
  type StatusReport,
  type SiteRow,
  type LinkStatus,
} from "./app/status.js";
export {
  Site,
  FederationTimeoutError,
  SiteNotOpenError,
  type SiteDeps,
  type SiteSnapshot,
  type SiteLifecycle,
} from "./app/site.js";
export {
  federationConfig,
  siteConfig,
  siteIds,
  DEFAULT_HEALTH_INTERVAL_MS,
  type FederationConfigInput,
  type SiteConfigInput,
} from "./config.js";
export type { FederationCommand } from "./domain/federation/decide.js";
export * from "./domain/federation/errors.js";
export {
  canonicalJson,
  placements,
  staleness,
  type FederationView,
  type SiteRecord,
  type VmRecord,
  type SiteFreshness,
} from "./domain/federation/state.js";
export { fedNames, ensureSiteStreams } from "./infra/fed-streams.js";
export { eventMirror, readMirroredMigration } from "./infra/migration-mirrors.js";
export { MigrationPlacements, DestinationSiteUnknownError } from "./app/migration-placements.js";
export { runSite, siteServiceConfig, type SiteFlags } from "./main.js";
