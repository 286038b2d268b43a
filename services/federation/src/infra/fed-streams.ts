import {
  DeliverPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type StreamSource,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { createHash } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { FederationAppend, type FederationEvent } from "#schemas/federation.js";
import { DwcpError, VersionConflictError } from "#common/errors.js";
import { configuredEventTrust, type EventTrust } from "#common/signing.js";
import { EventStore, jsonCodec } from "#common/event-sourcing/event-store.js";
import { isJetStreamApiError, isStreamNotFound } from "#common/event-sourcing/jetstream-errors.js";
import { safeJson } from "#common/json.js";
import { ensureStream } from "#common/layout.js";
import { FED_MIRROR_PREFIX, FED_STREAM_PREFIX } from "#common/remote-movers.js";

/** Stream and subject names of the federation (the README's table mirrors this). */
export const fedNames = {
  /** A site's own log, in its own domain: written only by that site. */
  stream: (site: string): string => `${FED_STREAM_PREFIX}${site}`,
  /** A read-only mirror of peer `site`'s log, kept in the local domain with the same sequences. */
  mirror: (site: string): string => `${FED_MIRROR_PREFIX}${site}`,
  mirrorPrefix: FED_MIRROR_PREFIX,
  subject: (site: string): string => `dwcp.fed.${site}.events`,
  subjects: (site: string): string => `dwcp.fed.${site}.>`,
} as const;

const MINUTE_NS = nanos(60_000);
/** Largest message the own log accepts: an append of at most maxAppendBytes, or one big event. */
export const MAX_MESSAGE_BYTES = 256 * 1024;
/** Default bytes per message when a batch of events is split into appends. */
export const DEFAULT_APPEND_BYTES = 64 * 1024;

/**
 * The encoding of log messages this build writes when every peer reads it: gzip (RFC 1952, with
 * its CRC) of the append's JSON. The events of a batch are alike (the same keys, similar
 * values), so a 64 KiB append shrinks several times over, and on a WAN link a full state crosses
 * in a few packets instead of dozens. A stored message is gzip if it starts with gzip's magic
 * (1f 8b); a JSON append starts with "[".
 */
export const GZIP_APPEND = "gzip";
/** The encodings this build reads besides plain JSON (announced in SiteJoined and health reports). */
export const READ_ENCODINGS: readonly string[] = [GZIP_APPEND];
/** Appends shorter than this stay JSON: a single event gains little and costs the reader a step. */
const GZIP_MIN_BYTES = 1024;

/** The append failed for a reason other than a lost race; retryable when the transport failed. */
export class FederationAppendError extends DwcpError {
  readonly code = "FEDERATION_APPEND_FAILED" as const;
  constructor(
    readonly subject: string,
    readonly retryable: boolean,
    options: { cause: unknown },
  ) {
    super(`appending to ${subject} failed: ${String(options.cause)}`, options);
  }
}

/** An append was attempted while the log's end was unknown: catch up, re-decide, append. */
export class LogNotCurrentError extends DwcpError {
  readonly code = "FEDERATION_LOG_NOT_CURRENT" as const;
  readonly retryable = true;
  constructor(readonly site: string) {
    super(`the federation log of site ${site} must be read to its end before the next append`);
  }
}

/** The site's own log. A single writer: each site appends only here, nobody else can. */
export async function ensureOwnStream(jsm: JetStreamManager, site: string): Promise<void> {
  await ensureStream(jsm, {
    name: fedNames.stream(site),
    subjects: [fedNames.subjects(site)],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    allow_direct: true,
    deny_delete: true,
    duplicate_window: 10 * MINUTE_NS,
    max_msg_size: MAX_MESSAGE_BYTES,
  });
}

/**
 * One mirror per peer, in the local domain, of the peer's log in the peer's domain (the client
 * turns `domain` into `external: {api: "$JS.<domain>.API"}`). Not one stream sourcing every
 * peer: on 2.9.10 a sourced copy keeps its Nats-Expected-Last-Subject-Sequence header and the
 * sourcing stream checks it against its own, interleaved sequence, rejects the copy ("last
 * sequence by subject mismatch") and stalls that source for good. A mirror keeps the origin's
 * sequence numbers, so the same check holds. Existing mirrors are left as they are (a mirror's
 * origin cannot change).
 */
export async function ensureMirrors(jsm: JetStreamManager, site: string, peers: readonly string[]): Promise<void> {
  for (const peer of peers) {
    if (peer !== site) await ensureMirror(jsm, fedNames.mirror(peer), { name: fedNames.stream(peer), domain: peer });
  }
}

/**
 * Creates the file-backed mirror `name` of `mirror` (a stream in another JetStream domain)
 * unless it exists: an existing mirror is left as it is, since a mirror's origin cannot change.
 * `maxMsgBytes` bounds what it takes, as its origin does.
 */
export async function ensureMirror(
  jsm: JetStreamManager,
  name: string,
  mirror: StreamSource,
  maxMsgBytes: number = MAX_MESSAGE_BYTES,
): Promise<void> {
  try {
    await jsm.streams.info(name);
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    await jsm.streams.add({
      name,
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      mirror,
      max_msg_size: maxMsgBytes,
    });
  }
}

/**
 * A site's own log and its mirrors of the peers' logs, as a Site creates them: what `dwcp init
 * --site` sets up on a deployed site, whose coordinators and movers find the peers by the mirrors.
 */
export async function ensureSiteStreams(jsm: JetStreamManager, site: string, peers: readonly string[]): Promise<void> {
  await ensureOwnStream(jsm, site);
  await ensureMirrors(jsm, site, peers);
}

/** The streams whose fold is the site's view: its own log and its mirror of every peer's. */
export const viewStreams = (site: string, peers: readonly string[]): string[] => [
  fedNames.stream(site),
  ...peers.filter((p) => p !== site).map(fedNames.mirror),
];

/** The peers a site mirrors; it lives with the remote-mover lookup, which finds peers by it. */
export { mirroredPeers } from "#common/remote-movers.js";

const encoder = new TextEncoder();

/**
 * Appends to the site's own log through the event-sourcing core's store. One message holds one
 * append: a JSON array of consecutive events, up to `maxAppendBytes` (0: one event per message),
 * so the events of one command are stored together and a large batch costs few messages.
 * Messages are pipelined, each expecting the subject's last sequence to be the one before it, so
 * a batch lands whole or as a gap-free prefix. The msgID is `<site>.<first seq>.<digest>`:
 * resending the same bytes after a timeout is a no-op, while different events at the same seq (a
 * second writer) meet the sequence check.
 */
export class FederationLog {
  /** Stream sequence of the last message on the site's subject; undefined after a failed append. */
  private last: number | undefined;
  /** The last sequence known for sure: where a catch-up after a failed append starts. */
  private known = 0;
  private readonly store: EventStore<FederationEvent[]>;

  /**
   * `onEvent` receives every event read back from the log (see catchUp). A failed append is not
   * resent here: the site re-reads its log and decides again (Site.execute).
   */
  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    readonly site: string,
    private readonly onEvent: (e: FederationEvent) => void,
    trust: EventTrust = configuredEventTrust(),
    private readonly opts: { maxAppendBytes: number; timeoutMs: number } = {
      maxAppendBytes: DEFAULT_APPEND_BYTES,
      timeoutMs: 10_000,
    },
  ) {
    this.store = new EventStore(
      js,
      jsm,
      {
        stream: fedNames.stream(site),
        subject: fedNames.subject,
        allSubjects: fedNames.subjects(site),
        codec: jsonCodec(FederationAppend),
      },
      // Signed with the site's key, like every event (see common/signing.ts).
      { resendForMs: 0, publishTimeoutMs: opts.timeoutMs, trust },
    );
  }

  /**
   * Reads every event stored after the last message this log knows of (all of them the first
   * time, and after a failed append, whatever of it was stored) and hands them to `onEvent`.
   */
  async catchUp(): Promise<void> {
    const subject = fedNames.subject(this.site);
    let last = this.last ?? this.known;
    await readStream(this.js, this.jsm, fedNames.stream(this.site), last + 1, (m) => {
      if (m.subject !== subject) return;
      last = m.seq;
      decodeAppend(m.data)?.forEach(this.onEvent);
    });
    this.last = last;
    this.known = last;
  }

  /** False after a failed append until catchUp(): the log's end is not known. */
  get isCurrent(): boolean {
    return this.last !== undefined;
  }

  /**
   * Appends `events`, numbered by decide after the log's end as the last catch-up saw it;
   * `gzip` when every reader of the log reads gzip appends.
   */
  async append(events: readonly FederationEvent[], o: { gzip?: boolean } = {}): Promise<void> {
    const base = this.last;
    if (base === undefined) throw new LogNotCurrentError(this.site);
    this.last = undefined;
    const messages = toMessages(events, this.opts.maxAppendBytes, o).map((m) => ({ data: m.body, msgID: m.id }));
    const last = await this.store
      .appendMessages(this.site, messages, base, { pipelined: true })
      .catch((err: unknown) => Promise.reject(appendError(err, fedNames.subject(this.site))));
    this.last = last;
    this.known = last;
  }
}

/**
 * Splits events into messages of at most `maxBytes` of JSON (an event larger than that goes
 * alone), each gzipped if `gzip` and it pays. The msgID digests the JSON, whatever the encoding.
 */
export function toMessages(
  events: readonly FederationEvent[],
  maxBytes: number,
  o: { gzip?: boolean } = {},
): Array<{ id: string; body: Uint8Array }> {
  const out: Array<{ id: string; body: Uint8Array }> = [];
  let parts: string[] = [];
  let size = 2;
  let first: FederationEvent | undefined;
  const flush = (): void => {
    if (!first) return;
    const json = encoder.encode(`[${parts.join(",")}]`);
    const digest = createHash("sha256").update(json).digest("base64url").slice(0, 16);
    out.push({ id: `${first.site}.${first.seq}.${digest}`, body: o.gzip ? gzipped(json) : json });
    parts = [];
    size = 2;
    first = undefined;
  };
  for (const e of events) {
    const json = JSON.stringify(e);
    if (first && size + json.length + 1 > maxBytes) flush();
    first ??= e;
    parts.push(json);
    size += json.length + 1;
  }
  flush();
  return out;
}

/** A lost race stays a VersionConflictError; a refusal is permanent, a transport failure retryable. */
function appendError(err: unknown, subject: string): DwcpError {
  if (err instanceof VersionConflictError) return err;
  return new FederationAppendError(subject, !isJetStreamApiError(err), { cause: err });
}

/**
 * `json` gzipped if that makes it at least a tenth smaller; else as it is. A JSON append longer
 * than a message may be stays JSON, for the store to refuse: readers inflate no more than that.
 */
function gzipped(json: Uint8Array): Uint8Array {
  if (json.length < GZIP_MIN_BYTES || json.length > MAX_MESSAGE_BYTES) return json;
  const gz = gzipSync(json);
  return gz.length <= json.length * 0.9 ? gz : json;
}

const isGzip = (data: Uint8Array): boolean => data.length >= 2 && data[0] === 0x1f && data[1] === 0x8b;

/**
 * A stored append (JSON, or gzip of JSON of at most MAX_MESSAGE_BYTES), validated; undefined
 * (the caller logs it) when it is not one.
 */
export function decodeAppend(data: Uint8Array): FederationEvent[] | undefined {
  let json = data;
  if (isGzip(data)) {
    try {
      json = gunzipSync(data, { maxOutputLength: MAX_MESSAGE_BYTES });
    } catch {
      return undefined; // corrupt, or inflating past the bound
    }
  }
  const parsed = FederationAppend.safeParse(safeJson(json));
  return parsed.success ? parsed.data : undefined;
}

/** Reads `stream` from `fromSeq` up to its last message at the time of the call. */
export async function readStream(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  fromSeq: number,
  onMsg: (m: JsMsg) => void,
): Promise<void> {
  const end = (await jsm.streams.info(stream)).state.last_seq;
  if (end < fromSeq) return;
  const consumer = await js.consumers.get(stream, {
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: fromSeq,
  });
  const iter = await consumer.consume({ max_messages: 1_000 });
  try {
    for await (const m of iter) {
      onMsg(m);
      if (m.seq >= end || m.info.pending === 0) break;
    }
  } finally {
    await iter.close();
  }
}

export interface Tail {
  /** Resolves once the tail has delivered what the stream held when the tail started. */
  caughtUp: Promise<void>;
  stop(): Promise<void>;
}

/** Follows `stream` from its first message for as long as it runs, in stream order. */
export async function tailStream(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  onMsg: (m: JsMsg) => void,
): Promise<Tail> {
  const end = (await jsm.streams.info(stream)).state.last_seq;
  let markCaughtUp!: () => void;
  const caughtUp = new Promise<void>((resolve) => (markCaughtUp = resolve));
  if (end === 0) markCaughtUp();
  const consumer = await js.consumers.get(stream, { deliver_policy: DeliverPolicy.All });
  const messages = await consumer.consume({
    max_messages: 1_000,
    callback: (m) => {
      onMsg(m);
      if (m.seq >= end || m.info.pending === 0) markCaughtUp();
    },
  });
  return {
    caughtUp,
    stop: async () => {
      await messages.close();
    },
  };
}
