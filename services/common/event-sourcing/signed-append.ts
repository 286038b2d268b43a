import type { JetStreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import { DwcpError } from "../errors.js";
import type { EventTrust } from "../signing.js";

/**
 * An append was answered "duplicate", but the message stored under its msgID is not ours (another
 * subject, another producer or a signature that is not ours): somebody published first under our
 * dedup id. Permanent: retrying gets the same answer until the duplicate window has passed.
 */
export class DedupIdSquattedError extends DwcpError {
  readonly code = "DEDUP_ID_SQUATTED";
  readonly retryable = false;
  constructor(
    readonly subject: string,
    readonly msgID: string,
    readonly storedSeq: number,
    why: string,
  ) {
    super(`${subject}: msgID ${msgID} is taken by stream sequence ${storedSeq}, which is not this append (${why})`);
  }
}

/** The signature headers of one message (undefined when the store signs nothing). */
export function signedHeaders(
  trust: EventTrust,
  subject: string,
  m: { data: Uint8Array; msgID: string },
): MsgHdrs | undefined {
  if (!trust.signer) return undefined;
  const h = natsHeaders();
  for (const [k, v] of trust.signer.sign(subject, m.msgID, m.data)) h.set(k, v);
  return h;
}

/**
 * Checks that the message stored at `seq` (which JetStream says carries our msgID) is ours: the
 * same subject and, when we sign, our key's valid signature. Throws DedupIdSquattedError if not.
 * The payload may differ (a second coordinator decided the same step with another timestamp);
 * the signature binds the msgID and subject to our key, which is what dedup relies on.
 */
export async function ownedCopy(
  jsm: JetStreamManager,
  stream: string,
  seq: number,
  subject: string,
  m: { data: Uint8Array; msgID: string },
  trust: EventTrust,
): Promise<void> {
  const stored = await jsm.streams.getMessage(stream, { seq });
  const why =
    stored === null
      ? "it is gone"
      : stored.subject !== subject
        ? `it is on ${stored.subject.slice(0, 200)}`
        : trust.signer && !trust.signer.signed(subject, m.msgID, stored.header, stored.data)
          ? "it is not signed with this producer's key"
          : undefined;
  if (why !== undefined) throw new DedupIdSquattedError(subject, m.msgID, seq, why);
}
