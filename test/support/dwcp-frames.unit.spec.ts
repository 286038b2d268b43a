import { describe, expect, it } from "vitest";
import { encodeChunk, encodeControl, HEADER_BYTES } from "../../services/mover/src/domain/data-channel/frames.js";
import { FrameWalker } from "./dwcp-frames.js";

class Recorder extends FrameWalker {
  readonly seen: string[] = [];
  protected onHeader(h: Buffer): void {
    this.seen.push(`header ${h[5]} ${h.readUInt32BE(8)}`);
  }
  protected onPayload(chunk: Buffer, from: number, n: number, at: number): void {
    this.seen.push(`payload ${at}+${n} ${chunk.subarray(from, from + n).toString("hex")}`);
    chunk[from] = 0xee; // rewrites in place
  }
  protected override onEnd(): void {
    this.seen.push("end");
  }
}

const logical = Buffer.alloc(4096, 0xab);
const wire = Buffer.concat([
  encodeControl({ kind: "BATCH_OK" }),
  encodeChunk({ offset: 0, length: 4096, crc32c: 1, zero: false, segments: [{ relOffset: 0, length: 8 }] }, logical),
]);

describe("FrameWalker", () => {
  it("sees every header, payload byte and frame end, whatever the segmentation", () => {
    const whole = new Recorder();
    whole.walk(Buffer.from(wire));
    expect(whole.seen).toEqual([
      "header 10 0",
      "end",
      "header 6 16",
      `payload 0+16 0000000000000008${"ab".repeat(8)}`, // the segment table {0, 8}, then its 8 bytes
      "end",
    ]);
    for (const piece of [1, 5, HEADER_BYTES, 40]) {
      const r = new Recorder();
      const out: Buffer[] = [];
      for (let at = 0; at < wire.length; at += piece) out.push(r.walk(Buffer.from(wire.subarray(at, at + piece))));
      expect(r.seen.filter((s) => !s.startsWith("payload"))).toEqual(["header 10 0", "end", "header 6 16", "end"]);
      const payloadBytes = r.seen
        .filter((s) => s.startsWith("payload"))
        .reduce((n, s) => n + Number(/\+(\d+)/.exec(s)?.[1]), 0);
      expect(payloadBytes).toBe(16);
      expect(Buffer.concat(out).length).toBe(wire.length);
    }
  });
});

describe("FrameWalker.stopWalking", () => {
  it("passes the bytes after the frame it is called at untouched, in the same chunk and later ones", () => {
    class Tunnel extends Recorder {
      protected override onEnd(): void {
        super.onEnd();
        this.stopWalking();
      }
    }
    const raw = Buffer.from(encodeControl({ kind: "BATCH_OK" })); // would be a frame if walked
    const r = new Tunnel();
    const first = Buffer.concat([encodeControl({ kind: "TUNNEL_OK" }), raw]);
    expect(r.walk(Buffer.from(first))).toEqual(first);
    expect(r.walk(Buffer.from(raw))).toEqual(raw);
    expect(r.seen).toEqual(["header 13 0", "end"]);
  });
});
