import { Transform } from "node:stream";
import { TcpRelay } from "#common/relay.js";
import { crc32c } from "#native/index.js";
import {
  FLAG_LZ4,
  FLAG_ZSTD,
  FLAG_ZERO,
  FRAME_CODES,
  SEGMENT_ENTRY_BYTES,
} from "../../services/mover/src/domain/data-channel/frames.js";
import { FrameWalker } from "./dwcp-frames.js";

/** Bytes the forger changes in a chunk: 32 chosen ones and 4 that put the CRC32C back. */
export const FORGED_BYTES = 36;

/**
 * A pattern that, XORed into any message at any position, leaves its CRC32C unchanged: CRC32C
 * is linear, so the change of the CRC is the pattern's CRC without init and final XOR (its CRC
 * minus that of as many zeros), and the last 4 bytes, that raw CRC of the first 32 in little
 * endian, bring it to zero; zeros after it keep it zero.
 */
export function crcNeutralPattern(seed = 0x5a): Buffer {
  const head = Buffer.alloc(FORGED_BYTES - 4);
  for (let i = 0; i < head.length; i++) head[i] = (seed + i * 37) & 0xff || 1;
  const raw = (crc32c(head) ^ crc32c(Buffer.alloc(head.length))) >>> 0;
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(raw);
  return Buffer.concat([head, tail]);
}

/**
 * Sees one direction of the data channel (sender to receiver) and XORs a CRC-neutral pattern
 * into the first bytes of the first data segment of each uncompressed CHUNK frame that has one
 * long enough: the receiver's CRC32C check passes on altered bytes, as the attacker's relay did.
 */
class Forger extends FrameWalker {
  private from: number | undefined;

  constructor(
    private readonly pattern: Buffer,
    private readonly onForged: () => void,
  ) {
    super();
  }

  protected onHeader(h: Buffer): void {
    this.from = undefined;
    if (h[5] !== FRAME_CODES.CHUNK) return;
    const flags = h.readUInt16BE(6);
    if ((flags & (FLAG_LZ4 | FLAG_ZSTD | FLAG_ZERO)) !== 0) return;
    const table = h.readUInt32BE(28) * SEGMENT_ENTRY_BYTES;
    // Segments are runs of whole 4 KiB pages (but a volume's last): room for the pattern.
    if (h.readUInt32BE(8) >= table + 4096) this.from = table;
  }

  protected onPayload(chunk: Buffer, from: number, n: number, at: number): void {
    if (this.from === undefined) return;
    for (let i = 0; i < n; i++) {
      const k = at + i - this.from;
      if (k >= 0 && k < this.pattern.length)
        chunk[from + i] = (chunk[from + i] as number) ^ (this.pattern[k] as number);
    }
  }

  protected override onEnd(): void {
    if (this.from !== undefined) this.onForged();
    this.from = undefined;
  }
}

/** A relay in front of a data channel that forges chunk bytes under a valid CRC32C. */
export class CrcForgingRelay {
  /** CHUNK frames altered so far. */
  forged = 0;
  private readonly waiters = new Set<() => void>();

  private constructor(private relay: TcpRelay | undefined) {}

  static async start(target: { host: string; port: number }): Promise<CrcForgingRelay> {
    const pattern = crcNeutralPattern();
    const r = new CrcForgingRelay(undefined);
    r.relay = await TcpRelay.start({
      target,
      forward: (c) => {
        const walker = new Forger(pattern, () => r.onForged());
        const forge = new Transform({ transform: (chunk: Buffer, _enc, done) => done(null, walker.walk(chunk)) });
        c.client.pipe(forge).pipe(c.upstream);
        c.upstream.pipe(c.client);
      },
    });
    return r;
  }

  get address(): string {
    return (this.relay as TcpRelay).address;
  }

  /** Resolves once a chunk has been forged. */
  async whenForged(): Promise<void> {
    if (this.forged > 0) return;
    await new Promise<void>((resolve) => this.waiters.add(resolve));
  }

  async close(): Promise<void> {
    await this.relay?.close();
  }

  private onForged(): void {
    this.forged++;
    for (const w of this.waiters) w();
    this.waiters.clear();
  }
}
