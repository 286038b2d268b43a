import { DwcpError } from "#common/errors.js";

/** The site has not joined the federation (or has left it): join before reporting or placing. */
export class SiteNotJoinedError extends DwcpError {
  readonly code = "SITE_NOT_JOINED" as const;
  readonly retryable = false;
  constructor(readonly site: string) {
    super(`site ${site} has not joined the federation; join it first (Site.join())`);
  }
}

/** A move names a destination the federation does not know as a joined site. */
export class UnknownSiteError extends DwcpError {
  readonly code = "UNKNOWN_SITE" as const;
  readonly retryable = false;
  constructor(readonly site: string) {
    super(`no joined site ${site} in the federation view; check the site id (dwcp federation status)`);
  }
}

/** The VM is not placed anywhere in this site's view. */
export class UnknownVmError extends DwcpError {
  readonly code = "UNKNOWN_VM" as const;
  readonly retryable = false;
  constructor(readonly vm: string) {
    super(`no placement for VM ${vm} in the federation view; place it first`);
  }
}

/** Placing a VM that the view says runs at another site: that is a move, not a placement. */
export class VmPlacedElsewhereError extends DwcpError {
  readonly code = "VM_PLACED_ELSEWHERE" as const;
  readonly retryable = false;
  constructor(
    readonly vm: string,
    readonly placedAt: string,
  ) {
    super(`VM ${vm} runs at site ${placedAt}; move it (VmMoved) instead of placing it again`);
  }
}

/** Only the site a VM runs at may remove it; only its source or destination may record a move. */
export class NotVmOwnerError extends DwcpError {
  readonly code = "NOT_VM_OWNER" as const;
  readonly retryable = false;
  constructor(
    readonly vm: string,
    readonly site: string,
    readonly placedAt: string,
  ) {
    super(`site ${site} cannot change VM ${vm}: it runs at site ${placedAt}; ask that site`);
  }
}
