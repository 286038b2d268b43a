import { EVT_STREAM } from "../../../common/layout.js";
import { connectNats, type Nats } from "../../../common/nats.js";
import { beyond, ReplayFolder, type ReplayBound, type ReplayView } from "../domain/replay/view.js";
import { nanosToMs, ORIG_SEQ_HEADER, ORIG_TIME_HEADER, payloadBytes } from "../domain/backup/format.js";
import { scanBackup } from "../infra/backup-file.js";
import { decodeMsg, decodeRecord, decodeValue } from "../infra/decode.js";
import { readStream } from "../infra/log-reader.js";

export interface ReplayOptions {
  /** Include events up to this stream sequence (the original one, for a restored log). */
  untilSeq?: number;
  /** Include events recorded at or before this time (ISO string or Date). */
  untilTime?: string | Date;
  /** Only migrations of this VM and its replication. */
  vm?: string;
}

export const toBound = (o: ReplayOptions): ReplayBound => ({
  ...(o.untilSeq !== undefined ? { untilSeq: o.untilSeq } : {}),
  ...(o.untilTime !== undefined ? { untilTimeMs: new Date(o.untilTime).getTime() } : {}),
});

/** Folds DWCP_EVT up to the bound on an existing connection. Read-only: no durable state. */
export async function replayWith(nats: Nats, opts: ReplayOptions = {}): Promise<ReplayView> {
  const bound = toBound(opts);
  const folder = new ReplayFolder();
  await readStream(nats, EVT_STREAM, (m) => {
    const rec = decodeMsg(m);
    if (beyond(bound, rec.seq, rec.timeMs)) return false;
    folder.add(rec);
    return true;
  });
  return folder.view(bound, opts.vm);
}

/** `dwcp replay`: the coordinator's view (migrations and replications) as of a point in the log. */
export async function replay(natsUrl: string, opts: ReplayOptions = {}): Promise<ReplayView> {
  const nats = await connectNats(natsUrl, "dwcp-replay");
  try {
    return await replayWith(nats, opts);
  } finally {
    await nats.nc.close();
  }
}

const header = (hs: Array<[string, string]> | undefined, name: string): string | undefined => hs?.find(([k]) => k === name)?.[1];

/**
 * Folds a backup file instead of a live stream (`dwcp replay --backup FILE`): the file is verified
 * as it is read, and a corrupt one fails without a view.
 */
export async function replayBackup(file: string, opts: ReplayOptions = {}): Promise<ReplayView> {
  const bound = toBound(opts);
  const folder = new ReplayFolder();
  let done = false;
  await scanBackup(file, (m) => {
    if (done || m.stream !== EVT_STREAM) return;
    const seq = Number(header(m.headers, ORIG_SEQ_HEADER) ?? m.seq);
    const timeMs = nanosToMs(header(m.headers, ORIG_TIME_HEADER) ?? m.ts);
    const rec = m.json !== undefined ? decodeValue(m.subject, m.json, seq, timeMs) : decodeRecord(m.subject, payloadBytes(m), seq, timeMs);
    if (beyond(bound, rec.seq, rec.timeMs)) done = true;
    else folder.add(rec);
  });
  return folder.view(bound, opts.vm);
}
