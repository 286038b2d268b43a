import { DwcpError } from "#common/errors.js";
import { FENCED } from "../../domain/data-channel/frames.js";

/**
 * A newer holder of this batch exists (JetStream redelivered the work item, or the coordinator
 * retried it), or its volume was already finalized: this sender must stop and not report the
 * batch. Retryable so that a caller that does not know this code never fails a migration on it;
 * the batch belongs to the newer holder either way.
 */
export class FencedError extends DwcpError {
  readonly code = FENCED;
  readonly retryable = true;
}
