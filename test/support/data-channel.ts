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
import { FRAME_CODES, HEADER_BYTES, SEGMENT_ENTRY_BYTES } from "../../services/mover/src/domain/data-channel/frames.js";
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
class ChunkCorrupter {
  flips = 0;
  private header = Buffer.alloc(0);
  private payloadLeft = 0;
  private flipIn = -1;

  constructor(private readonly mode: "once" | "always") {}

  transform(input: Buffer): Buffer {
    const out = Buffer.from(input);
    let i = 0;
    while (i < out.length) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, out.length - i);
        if (this.flipIn >= 0 && this.flipIn < n) {
          out[i + this.flipIn] = (out[i + this.flipIn] ?? 0) ^ 0x10;
          this.flips += 1;
          this.flipIn = -1;
        } else if (this.flipIn >= 0) this.flipIn -= n;
        this.payloadLeft -= n;
        i += n;
        continue;
      }
      const take = Math.min(HEADER_BYTES - this.header.length, out.length - i);
      this.header = Buffer.concat([this.header, out.subarray(i, i + take)]);
      i += take;
      if (this.header.length === HEADER_BYTES) this.startFrame();
    }
    return out;
  }

  private startFrame(): void {
    this.payloadLeft = this.header.readUInt32BE(8);
    const segments = this.header.readUInt32BE(28);
    const wanted = this.mode === "always" || this.flips === 0;
    if (this.header[5] === FRAME_CODES.CHUNK && segments > 0 && wanted)
      this.flipIn = segments * SEGMENT_ENTRY_BYTES + 10;
    this.header = Buffer.alloc(0);
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
      upstream.pipe(client);
    },
  });
  return { address: relay.address, corrupter, close: () => relay.close() };
}
