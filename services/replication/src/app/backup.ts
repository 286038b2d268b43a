import type { JsMsg, StreamInfo } from "@nats-io/jetstream";
import { BACKUP_FORMAT, type BackupMessage, type BackupStream } from "#schemas/replication.js";
import { EVT_STREAM } from "#common/layout.js";
import type { Nats } from "#common/nats.js";
import { encodePayload } from "../domain/backup/format.js";
import { signerKey } from "../domain/backup/signature.js";
import { BackupWriter, type BackupHeaderBody } from "../infra/backup-file.js";
import type { BackupSigningKey } from "../infra/backup-signing.js";
import { readStream } from "../infra/log-reader.js";
import { withNats } from "../infra/nats-session.js";
import { replicationLogger, type LogOption } from "./logging.js";

export interface BackupOptions extends LogOption {
  /** Output file; written as FILE.tmp, fsynced and renamed. */
  out: string;
  /** Streams to export, in order. Default: DWCP_EVT only (see restore-log for DWCP_CMD). */
  streams?: string[];
  /** Signs the file (loadSigningKey: an nkey seed, ed25519, or an HMAC secret). */
  key: BackupSigningKey;
}

export interface BackupSummary {
  file: string;
  /** Who signed: `ed25519 U...` or `hmac-sha256 <key id>`. */
  signer: string;
  messages: number;
  streams: Array<{ name: string; firstSeq: number; lastSeq: number; messages: number }>;
  seconds: number;
}

const toRecord = (stream: string, m: JsMsg): BackupMessage => {
  const headers: Array<[string, string]> = [];
  if (m.headers) for (const [k, vs] of m.headers) for (const v of vs) headers.push([k, v]);
  return {
    stream,
    seq: m.seq,
    ts: m.timestampNanos.toString(),
    subject: m.subject,
    ...(headers.length > 0 ? { headers } : {}),
    ...encodePayload(m.data),
  };
};

const describe = (i: StreamInfo): BackupStream => ({
  name: i.config.name,
  config: { ...i.config },
  firstSeq: i.state.first_seq,
  lastSeq: i.state.last_seq,
  messages: i.state.messages,
});

/**
 * Exports streams with sequences, timestamps and headers, signed with `opts.key`. Each stream is
 * read up to the last sequence it had when the backup began, so the header describes exactly what
 * follows.
 */
export async function backupWith(nats: Nats, opts: BackupOptions): Promise<BackupSummary> {
  const started = Date.now();
  const log = replicationLogger(opts, { file: opts.out });
  const infos = await Promise.all((opts.streams ?? [EVT_STREAM]).map((s) => nats.jsm.streams.info(s)));
  const header: BackupHeaderBody = {
    format: BACKUP_FORMAT,
    createdAt: new Date().toISOString(),
    streams: infos.map(describe),
  };
  const w = await BackupWriter.create(opts.out, header, opts.key);
  const signer = `${opts.key.signer.alg} ${signerKey(opts.key.signer)}`;
  log.info({ streams: header.streams.map((st) => st.name), signer }, "backup started");
  try {
    for (const st of header.streams) {
      const pending: Promise<void>[] = [];
      const each = (m: JsMsg): void => void pending.push(w.message(toRecord(st.name, m)));
      await readStream(nats, st.name, each, { endSeq: st.lastSeq });
      await Promise.all(pending);
    }
    const messages = await w.commit();
    log.info({ messages, seconds: (Date.now() - started) / 1000 }, "backup written");
    return {
      file: opts.out,
      signer,
      messages,
      streams: header.streams.map(({ config: _c, ...rest }) => rest),
      seconds: (Date.now() - started) / 1000,
    };
  } catch (err) {
    log.error({ err }, "backup failed; the partial file was removed");
    await w.abort();
    throw err;
  }
}

/** `dwcp backup --out FILE [--streams DWCP_EVT,DWCP_CMD] [--sign-key FILE]`. */
export const backup = (natsUrl: string, opts: BackupOptions): Promise<BackupSummary> =>
  withNats(natsUrl, "dwcp-backup", (nats) => backupWith(nats, opts));
