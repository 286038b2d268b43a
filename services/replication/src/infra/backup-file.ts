import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import {
  BackupHeader,
  BackupMessage,
  BackupTrailer,
  type BackupMessage as Msg,
} from "../../../../schemas/replication.js";
import { BackupCorruptError } from "../domain/errors.js";
import { AtomicFile } from "./durable-file.js";

/** Writes header, messages and trailer; the digest runs over every line before the trailer. */
export class BackupWriter {
  private readonly hash: Hash = createHash("sha256");
  private count = 0;
  private constructor(private readonly file: AtomicFile) {}

  static async create(path: string, header: BackupHeader): Promise<BackupWriter> {
    const w = new BackupWriter(await AtomicFile.create(path, 0o600));
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
    const trailer: BackupTrailer = { trailer: true, count: this.count, sha256: this.hash.digest("hex") };
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
  count: number;
  perStream: Record<string, number>;
  sha256: string;
}

/** Lines of a file as raw bytes (without the "\n"), so the digest covers exactly what is stored. */
async function* rawLines(file: string): AsyncGenerator<Buffer> {
  let rest: Buffer = Buffer.alloc(0);
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    const buf = rest.length === 0 ? chunk : Buffer.concat([rest, chunk]);
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl >= 0; nl = buf.indexOf(10, start)) {
      yield buf.subarray(start, nl);
      start = nl + 1;
    }
    rest = Buffer.from(buf.subarray(start));
  }
  if (rest.length > 0) yield rest;
}

/**
 * The per-message check, by hand: it runs a million times in a replay, and the digest has
 * already vouched for the bytes; the shape check only guards against a well-formed but foreign file.
 */
function asMessage(file: string, n: number, json: unknown): Msg {
  const m = json as Partial<Msg> | null;
  if (
    typeof m !== "object" || m === null || typeof m.stream !== "string" || !Number.isSafeInteger(m.seq) || (m.seq ?? 0) <= 0 ||
    typeof m.ts !== "string" || typeof m.subject !== "string" || (typeof m.data === "string") === ("json" in m) ||
    (m.headers !== undefined && !Array.isArray(m.headers))
  ) {
    const r = BackupMessage.safeParse(json);
    throw new BackupCorruptError(file, n, r.success ? "malformed message" : r.error.message.slice(0, 200));
  }
  return m as Msg;
}

function parseLine<T>(file: string, n: number, text: string, schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { message: string } } }): T {
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

/**
 * Reads a backup front to back, checking every line, sequence order and the trailer's count and
 * digest. `onMessage` sees messages as they are read: pass none to verify only, which is what
 * restore-log does before it imports anything.
 */
export async function scanBackup(file: string, onMessage?: (m: Msg) => Promise<void> | void): Promise<BackupScan> {
  const hash = createHash("sha256");
  let header: BackupHeader | undefined;
  let trailer: BackupTrailer | undefined;
  const lastSeq = new Map<string, number>();
  const perStream: Record<string, number> = {};
  let n = 0;
  let count = 0;
  for await (const raw of rawLines(file)) {
    n++;
    if (trailer) throw new BackupCorruptError(file, n, "data after the trailer");
    const text = raw.toString("utf8");
    if (n === 1) {
      header = parseLine(file, n, text, BackupHeader);
      for (const st of header.streams) lastSeq.set(st.name, 0);
    } else if (text.startsWith('{"trailer"')) {
      trailer = parseLine(file, n, text, BackupTrailer);
      continue;
    } else {
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        throw new BackupCorruptError(file, n, "not JSON");
      }
      const m = asMessage(file, n, json);
      const prev = lastSeq.get(m.stream);
      if (prev === undefined) throw new BackupCorruptError(file, n, `stream ${m.stream} is not in the header`);
      if (m.seq <= prev) throw new BackupCorruptError(file, n, `sequence ${m.seq} after ${prev}`);
      lastSeq.set(m.stream, m.seq);
      perStream[m.stream] = (perStream[m.stream] ?? 0) + 1;
      count++;
      await onMessage?.(m);
    }
    hash.update(raw);
    hash.update(NEWLINE);
  }
  if (!header) throw new BackupCorruptError(file, 1, "empty file");
  if (!trailer) throw new BackupCorruptError(file, n, "no trailer: the file is truncated");
  const sha256 = hash.digest("hex");
  if (trailer.count !== count) throw new BackupCorruptError(file, n, `trailer says ${trailer.count} messages, found ${count}`);
  if (trailer.sha256 !== sha256) throw new BackupCorruptError(file, n, "SHA-256 mismatch: the file was altered");
  return { header, count, perStream, sha256 };
}
