import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Worker } from "node:worker_threads";
import { BackupHeader, BackupMessage, BackupTrailer, type BackupMessage as Msg } from "#schemas/replication.js";
import { echo, signedStatement } from "../domain/backup/signature.js";
import { BackupCorruptError } from "../domain/errors.js";
import type { BackupSigningKey } from "./backup-signing.js";
import { AtomicFile } from "./durable-file.js";

/** What a backup's header says besides its version and signer. */
export type BackupHeaderBody = Pick<BackupHeader, "format" | "createdAt" | "streams">;

/**
 * Writes header, messages and trailer; the digest runs over every line before the trailer. With
 * a key the file is version 2 and its trailer carries the signature of the digest; without one it
 * is an unsigned version 1 file, which restore-log refuses by default.
 */
export class BackupWriter {
  private readonly hash: Hash = createHash("sha256");
  private count = 0;
  private constructor(
    private readonly file: AtomicFile,
    private readonly key: BackupSigningKey | undefined,
  ) {}

  static async create(path: string, body: BackupHeaderBody, key?: BackupSigningKey): Promise<BackupWriter> {
    const w = new BackupWriter(await AtomicFile.create(path, 0o600), key);
    const { format, createdAt, streams } = body;
    const header: BackupHeader = key
      ? { format, version: 2, createdAt, streams, signer: key.signer }
      : { format, version: 1, createdAt, streams };
    await w.line(header);
    return w;
  }

  private async line(obj: unknown): Promise<void> {
    const buf = Buffer.from(`${JSON.stringify(obj)}\n`);
    this.hash.update(buf);
    await this.file.write(buf);
  }

  async message(m: Msg): Promise<void> {
    this.count++;
    await this.line(m);
  }

  async commit(): Promise<number> {
    const sha256 = this.hash.digest("hex");
    const trailer: BackupTrailer = { trailer: true, count: this.count, sha256 };
    if (this.key) trailer.signature = this.key.sign(signedStatement(this.key.signer, this.count, sha256));
    await this.file.write(Buffer.from(`${JSON.stringify(trailer)}\n`));
    await this.file.commit();
    return this.count;
  }

  abort(): Promise<void> {
    return this.file.abort();
  }
}

const NEWLINE = Buffer.from("\n");

export interface BackupScan {
  header: BackupHeader;
  /** The trailer: its count and digest were checked; its signature is verifyBackupSignature's to check. */
  trailer: BackupTrailer;
  count: number;
  perStream: Record<string, number>;
  sha256: string;
}

/**
 * The longest line a backup may hold: a message of NATS's largest payload (64 MiB), base64, with
 * its head. Longer lines are refused as they are read, not buffered.
 */
export const MAX_LINE_BYTES = 96 << 20;

/** Where eachLine feeds the bytes it digests: a Hash, or nothing when a worker digests the file. */
type Digest = { update(b: Buffer): Digest };
const NO_DIGEST: Digest = { update: () => NO_DIGEST };

/** Files at least this big are digested by a worker thread while the main thread reads the lines. */
const DIGEST_WORKER_MIN_BYTES = 64 << 20;

/**
 * The SHA-256 of `file` up to the start of its last line, on a worker thread (a replay of a large
 * backup otherwise spends ~1 s of its main thread on it). Undefined if the worker cannot say.
 */
function digestOnWorker(file: string): {
  result: Promise<{ sha256: string; upTo: number } | undefined>;
  stop(): Promise<number>;
} {
  const w = new Worker(new URL("./digest-worker.mjs", import.meta.url), { workerData: { file } });
  const result = new Promise<{ sha256: string; upTo: number } | undefined>((resolve) => {
    w.once("message", (m: { ok: boolean; sha256?: string; upTo?: number }) =>
      resolve(m.ok && m.sha256 !== undefined && m.upTo !== undefined ? { sha256: m.sha256, upTo: m.upTo } : undefined),
    );
    w.once("error", () => resolve(undefined));
    w.once("exit", () => resolve(undefined));
  });
  return { result, stop: () => w.terminate() };
}

/**
 * Calls `onLine` for every line of a file (bytes without the "\n"), in order, and feeds the digest
 * every line before the one `onLine` reports as the trailer (each with its "\n"). Lines are cut
 * from the read buffers in place; the digest is fed whole runs of lines, not line by line.
 */
export async function eachLine(
  chunks: AsyncIterable<Buffer> | Iterable<Buffer>,
  hash: Digest,
  onLine: (line: Buffer) => "trailer" | Promise<void> | void,
  tooLong: (bytes: number) => Error = (bytes) => new BackupCorruptError("(stream)", 0, `a line of ${bytes}+ bytes`),
): Promise<void> {
  // The start of a line that runs past the read buffer: its pieces, joined once when it ends.
  let rest: Buffer[] = [];
  let restBytes = 0;
  let hashing = true;
  for await (const chunk of chunks) {
    let start = 0;
    if (restBytes > 0) {
      const nl = chunk.indexOf(10);
      // A hostile file must not grow one line without bound before its digest and signature fail.
      if (restBytes + (nl < 0 ? chunk.length : nl) > MAX_LINE_BYTES) throw tooLong(restBytes + chunk.length);
      if (nl < 0) {
        rest.push(chunk);
        restBytes += chunk.length;
        continue;
      }
      const line = Buffer.concat([...rest, chunk.subarray(0, nl)]);
      rest = [];
      restBytes = 0;
      start = nl + 1;
      const r = onLine(line);
      if (r === "trailer") hashing = false;
      else {
        if (hashing) hash.update(line).update(NEWLINE);
        if (r) await r;
      }
    }
    const from = start;
    for (let nl = chunk.indexOf(10, start); nl >= 0; nl = chunk.indexOf(10, start)) {
      const r = onLine(chunk.subarray(start, nl));
      if (r === "trailer") {
        if (hashing) hash.update(chunk.subarray(from, start));
        hashing = false;
      } else if (r) await r; // only restore-log's publishing waits; a replay stays synchronous
      start = nl + 1;
    }
    if (hashing) hash.update(chunk.subarray(from, start));
    if (start < chunk.length) {
      rest = [Buffer.from(chunk.subarray(start))];
      restBytes = chunk.length - start;
    }
  }
  if (restBytes === 0) return;
  // A last line without "\n" is digested as if it had one (as the writer would have written it).
  const last = Buffer.concat(rest);
  const r = onLine(last);
  if (r === "trailer") return;
  if (hashing) hash.update(last).update(NEWLINE);
  if (r) await r;
}

/**
 * The per-message check, by hand: it runs a million times in a replay, and the digest has
 * already vouched for the bytes; the shape check only guards against a well-formed but foreign file.
 */
function asMessage(file: string, n: number, json: unknown): Msg {
  const m = json as Partial<Msg> | null;
  if (
    typeof m !== "object" ||
    m === null ||
    typeof m.stream !== "string" ||
    !Number.isSafeInteger(m.seq) ||
    (m.seq ?? 0) <= 0 ||
    typeof m.ts !== "string" ||
    typeof m.subject !== "string" ||
    (typeof m.data === "string") === "json" in m ||
    (m.headers !== undefined && !Array.isArray(m.headers))
  ) {
    const r = BackupMessage.safeParse(json);
    throw new BackupCorruptError(file, n, r.success ? "malformed message" : r.error.message.slice(0, 200));
  }
  return m as Msg;
}

function parseLine<T>(
  file: string,
  n: number,
  text: string,
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { message: string } } },
): T {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new BackupCorruptError(file, n, "not JSON");
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new BackupCorruptError(file, n, r.error.message.slice(0, 200));
  return r.data;
}

/** SHA-256 of the first `upTo` bytes of a file. */
async function digestFile(file: string, upTo: number): Promise<string> {
  const h = createHash("sha256");
  if (upTo > 0)
    for await (const chunk of createReadStream(file, { start: 0, end: upTo - 1 }) as AsyncIterable<Buffer>)
      h.update(chunk);
  return h.digest("hex");
}

/** The fields of a message line before its payload. */
export type MessageHead = Omit<Msg, "data" | "json">;

/**
 * The head of a message line as BackupWriter writes it (keys in that order, no escapes in the
 * strings), without parsing its payload; undefined for any other form, which is then parsed whole.
 */
const HEAD = new RegExp(
  String.raw`^\{"stream":"([^"\\]+)","seq":([1-9]\d{0,14}),"ts":"(\d+)","subject":"([^"\\]+)",` +
    // optional "headers":[["name","value"],...] (the array captured whole), then the payload key
    String.raw`(?:"headers":(\[(?:\["[^"\\]*","[^"\\]*"\](?:,(?=\[))?)*\]),)?"(?:json|data)":`,
);

/** How much of a line peekHead is first given (a head with long headers gets the whole line). */
const HEAD_BYTES = 512;

export function peekHead(text: string): MessageHead | undefined {
  const m = HEAD.exec(text);
  if (!m) return undefined;
  const [, stream, seq, ts, subject, headers] = m as unknown as [
    string,
    string,
    string,
    string,
    string,
    string | undefined,
  ];
  let parsed: Array<[string, string]> | undefined;
  try {
    parsed = headers === undefined ? undefined : (JSON.parse(headers) as Array<[string, string]>);
  } catch {
    return undefined; // a control character the pattern let through: the whole line is parsed (and refused)
  }
  return { stream, seq: Number(seq), ts, subject, ...(parsed !== undefined ? { headers: parsed } : {}) };
}

export interface ScanOptions {
  /**
   * Parse only the messages whose subject this accepts; the others are checked from their head
   * (stream, order) and handed to `onOther`. Scans of the same file with disjoint `only`s
   * together parse every line once (a partitioned replay).
   */
  only?: (subject: string) => boolean;
  onOther?: (m: MessageHead) => void;
  /** Check the trailer's digest (default true); off for a scan whose sibling checks it. */
  digest?: boolean;
  /** Sees the header as soon as it is read, before any message. */
  onHeader?: (h: BackupHeader) => void;
}

/**
 * Reads a backup front to back, checking every line, sequence order and the trailer's count and
 * digest. `onMessage` sees messages as they are read: pass none to verify only, which is what
 * restore-log does before it imports anything.
 */
export async function scanBackup(
  file: string,
  onMessage?: (m: Msg) => Promise<void> | void,
  opts: ScanOptions = {},
): Promise<BackupScan> {
  const hash = createHash("sha256");
  const digest = opts.digest ?? true;
  const worker = digest && (await stat(file)).size >= DIGEST_WORKER_MIN_BYTES ? digestOnWorker(file) : undefined;
  try {
    const chunks = createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
    return await scanWith(file, chunks, digest ? hash : undefined, worker?.result, onMessage, opts);
  } finally {
    await worker?.stop();
  }
}

/**
 * scanBackup over bytes already in memory (`name` stands for the file in errors): the same
 * checks, for a backup received some other way and for fuzzing the reader without files.
 */
export function scanBackupBytes(
  name: string,
  chunks: AsyncIterable<Buffer> | Iterable<Buffer>,
  onMessage?: (m: Msg) => Promise<void> | void,
  opts: Omit<ScanOptions, "digest"> = {},
): Promise<BackupScan> {
  return scanWith(name, chunks, createHash("sha256"), undefined, onMessage, opts);
}

async function scanWith(
  file: string,
  chunks: AsyncIterable<Buffer> | Iterable<Buffer>,
  hash: Hash | undefined,
  worker: Promise<{ sha256: string; upTo: number } | undefined> | undefined,
  onMessage: ((m: Msg) => Promise<void> | void) | undefined,
  opts: ScanOptions,
): Promise<BackupScan> {
  let trailerAt = -1; // byte offset of the trailer line, to match the worker's digest against
  let offset = 0;
  let header: BackupHeader | undefined;
  let trailer: BackupTrailer | undefined;
  const lastSeq = new Map<string, number>();
  const perStream: Record<string, number> = {};
  let n = 0;
  let count = 0;
  const inOrder = (m: { stream: string; seq: number }): void => {
    const prev = lastSeq.get(m.stream);
    if (prev === undefined) throw new BackupCorruptError(file, n, `stream ${echo(m.stream)} is not in the header`);
    if (m.seq <= prev) throw new BackupCorruptError(file, n, `sequence ${m.seq} after ${prev}`);
    lastSeq.set(m.stream, m.seq);
    perStream[m.stream] = (perStream[m.stream] ?? 0) + 1;
    count++;
  };
  await eachLine(
    chunks,
    worker || !hash ? NO_DIGEST : hash,
    (raw) => {
      n++;
      const at = offset;
      offset += raw.length + 1;
      if (trailer) throw new BackupCorruptError(file, n, "data after the trailer");
      if (opts.only && n > 1) {
        // Decode only the head of the line: half of a partitioned replay's lines go no further.
        const head =
          peekHead(raw.toString("utf8", 0, HEAD_BYTES)) ??
          (raw.length > HEAD_BYTES ? peekHead(raw.toString("utf8")) : undefined);
        if (head && !opts.only(head.subject)) {
          inOrder(head);
          opts.onOther?.(head);
          return;
        }
      }
      const text = raw.toString("utf8");
      if (n === 1) {
        header = parseLine(file, n, text, BackupHeader);
        for (const st of header.streams) lastSeq.set(st.name, 0);
        opts.onHeader?.(header);
        return;
      }
      if (text.startsWith('{"trailer"')) {
        trailer = parseLine(file, n, text, BackupTrailer);
        trailerAt = at;
        return "trailer";
      }
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        throw new BackupCorruptError(file, n, "not JSON");
      }
      const m = asMessage(file, n, json);
      inOrder(m);
      return onMessage?.(m);
    },
    (bytes) => new BackupCorruptError(file, n + 1, `line longer than ${MAX_LINE_BYTES} bytes (${bytes}+)`),
  );
  if (!header) throw new BackupCorruptError(file, 1, "empty file");
  if (!trailer) throw new BackupCorruptError(file, n, "no trailer: the file is truncated");
  if (trailer.count !== count)
    throw new BackupCorruptError(file, n, `trailer says ${trailer.count} messages, found ${count}`);
  if (!hash) return { header, trailer, count, perStream, sha256: trailer.sha256 }; // the sibling scan's to check
  const digested = await worker;
  // The worker digested up to the last line; that must be where the trailer is, or digest here.
  const sha256 = !worker
    ? hash.digest("hex")
    : digested?.upTo === trailerAt
      ? digested.sha256
      : await digestFile(file, trailerAt);
  if (trailer.sha256 !== sha256) throw new BackupCorruptError(file, n, "SHA-256 mismatch: the file was altered");
  return { header, trailer, count, perStream, sha256 };
}
