/**
 * Helpers for the data-channel integration tests: temp dirs, sparse files and a TCP proxy (the
 * product's TcpRelay) that corrupts chunk payloads in flight.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import type { Logger } from "#common/logger.js";
import { TcpRelay } from "#common/relay.js";
import type { Provisioned, Role } from "#common/credentials/provision.js";
import { loadLinkSecurity, type LinkTls } from "#common/secure-link/tls.js";
import { FRAME_CODES, SEGMENT_ENTRY_BYTES } from "../../services/mover/src/domain/data-channel/frames.js";
import { FrameWalker } from "./dwcp-frames.js";
import type { SendBatchOptions } from "../../services/mover/src/infra/data-channel/client.js";

export const MiB = 1024 * 1024;

export const silentLog: Logger = pino({ level: process.env["DWCP_TEST_LOG"] ?? "silent" });

/** A whole-volume batch of 1 MiB chunks with test defaults; `over` sets the rest. */
export function batchOptions(
  base: Pick<SendBatchOptions, "address" | "secret" | "sourceHost" | "migrationId" | "sourcePath" | "volumeSizeBytes">,
  over: Partial<SendBatchOptions> = {},
): SendBatchOptions {
  return {
    batch: 0,
    attempt: 0,
    destDir: "vm",
    destName: "disk.img",
    chunkSizeBytes: MiB,
    firstChunk: 0,
    chunkCount: Math.ceil(base.volumeSizeBytes / MiB),
    log: silentLog,
    ...base,
    ...over,
  };
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `dwcp-${prefix}-`));
}

/** A file of `size` bytes that is a hole except for `extents` of random data. */
export async function makeSparseFile(
  path: string,
  size: number,
  extents: { offset: number; length: number }[],
): Promise<void> {
  const fh = await open(path, "w");
  try {
    await fh.truncate(size);
    for (const e of extents) await fh.write(randomBytes(e.length), 0, e.length, e.offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Rewrites the client → server byte stream, flipping one bit in the segment data of CHUNK
 * frames: the first one only (`once`) or every one. It parses just enough of each 32-byte
 * header to know where payloads start and end.
 */
class ChunkCorrupter extends FrameWalker {
  flips = 0;
  private flipAt = -1;

  constructor(private readonly mode: "once" | "always") {
    super();
  }

  transform(input: Buffer): Buffer {
    return this.walk(Buffer.from(input));
  }

  protected onHeader(header: Buffer): void {
    const segments = header.readUInt32BE(28);
    const wanted = this.mode === "always" || this.flips === 0;
    this.flipAt = header[5] === FRAME_CODES.CHUNK && segments > 0 && wanted ? segments * SEGMENT_ENTRY_BYTES + 10 : -1;
  }

  protected onPayload(chunk: Buffer, from: number, n: number, at: number): void {
    if (this.flipAt < at || this.flipAt >= at + n) return;
    const i = from + this.flipAt - at;
    chunk[i] = (chunk[i] ?? 0) ^ 0x10;
    this.flips += 1;
    this.flipAt = -1;
  }
}

export interface CorruptingProxy {
  address: string;
  corrupter: { flips: number };
  close(): Promise<void>;
}

/** A loopback proxy in front of `target` that corrupts chunk data (see ChunkCorrupter). */
export async function startCorruptingProxy(target: string, mode: "once" | "always"): Promise<CorruptingProxy> {
  const at = target.lastIndexOf(":");
  const corrupter = new ChunkCorrupter(mode);
  const relay = await TcpRelay.start({
    target: { host: target.slice(0, at), port: Number(target.slice(at + 1)) },
    forward: ({ client, upstream }) => {
      client.on("data", (d: Buffer) => upstream.write(corrupter.transform(d)));
      client.on("end", () => upstream.end());
      upstream.pipe(client);
    },
  });
  return { address: relay.address, corrupter, close: () => relay.close() };
}

/** A logger that keeps every line, and resolves waitFor() once a line satisfying `pred` was logged. */
export function capturingLog(): {
  log: Logger;
  lines: Record<string, unknown>[];
  waitFor(pred: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
} {
  const lines: Record<string, unknown>[] = [];
  const waiters: Array<() => void> = [];
  const log = pino(
    { level: "debug" },
    {
      write(s: string) {
        lines.push(JSON.parse(s) as Record<string, unknown>);
        for (const w of waiters.splice(0)) w();
      },
    },
  );
  const waitFor = (pred: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> =>
    new Promise((resolve) => {
      const check = (): void => {
        const hit = lines.find(pred);
        if (hit !== undefined) resolve(hit);
        else waiters.push(check);
      };
      check();
    });
  return { log, lines, waitFor };
}

/** The link TLS material of a provisioned role (mover-<h>, replication-<h>), read as a service would. */
export function linkTlsOf(p: Provisioned, role: Role): LinkTls {
  const r = p.roles.get(role);
  if (r === undefined) throw new Error(`no role ${role}`);
  const link = loadLinkSecurity({ mode: "tls", caFile: p.caFile, certFile: r.certFile, keyFile: r.keyFile });
  if (link?.mode !== "tls") throw new Error("not TLS");
  return link.tls;
}
