import { DwcpError } from "#common/errors.js";
import { connectNats, type NatsCredentials } from "#common/nats.js";

/** A site could not reach another site's JetStream API over the leafnode links in time. */
export class DomainUnreachableError extends DwcpError {
  readonly code = "DOMAIN_UNREACHABLE" as const;
  readonly retryable = true;
  constructor(
    readonly url: string,
    readonly domain: string,
    timeoutMs: number,
  ) {
    super(
      `from ${url} the JetStream domain ${domain} did not answer within ${timeoutMs} ms; ` +
        "check the leafnode link (server logs)",
    );
  }
}

/**
 * Resolves once the server at `url` reaches the JetStream API of every domain in `domains`.
 * Polls with a deadline: no event announces that leafnode interest has propagated, and a
 * request without responders fails at once, so each probe is cheap.
 */
export async function waitForDomains(
  url: string,
  domains: readonly string[],
  credentials: NatsCredentials,
  timeoutMs = 15_000,
): Promise<void> {
  const { nc } = await connectNats(url, "dwcp-federation-probe", undefined, { credentials, waitOnFirstConnect: false });
  const deadline = Date.now() + timeoutMs;
  try {
    for (const domain of domains) {
      for (;;) {
        try {
          await nc.request(`$JS.${domain}.API.INFO`, "", { timeout: 1_000 });
          break;
        } catch {
          if (Date.now() > deadline) throw new DomainUnreachableError(url, domain, timeoutMs);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    }
  } finally {
    await nc.close();
  }
}
