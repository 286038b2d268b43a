import { z } from "zod";
import { HostId, Id, Timestamp, Uint } from "./common.js";

/**
 * How far one batch has got, published by the sending mover on core NATS
 * (`dwcp.progress.<migration id>`, nothing stored) several times a second while the batch moves,
 * so a client shows progress between the batch's events. Counted over the chunks the destination
 * has acknowledged so far in this attempt:
 * - `bytes`: logical bytes, `dataBytes + zeroBytes`;
 * - `dataBytes`: the length of chunks that carried data, before compression (zero pages inside
 *   them, sent as holes, included);
 * - `zeroBytes`: the length of all-zero chunks, skipped (nothing sent);
 * - `wireBytes`: what went over the data channel for them, after compression, with framing.
 * The batch's ChunkBatchTransferred carries the same `bytes` and `wireBytes` once it is done.
 */
export const BatchProgress = z.object({
  type: z.literal("BatchProgress"),
  version: z.literal(1),
  migrationId: Id,
  batch: Uint,
  attempt: Uint,
  host: HostId,
  chunks: Uint,
  bytes: Uint,
  dataBytes: Uint,
  zeroBytes: Uint,
  wireBytes: Uint,
  at: Timestamp,
});

export type BatchProgress = z.infer<typeof BatchProgress>;
