import { describe, expect, it } from "vitest";
import { ByteQueue } from "./byte-queue.js";
import { encodeRecord, RecordDecoder } from "./records.js";

const bytes = (...parts: Uint8Array[]): Buffer => Buffer.concat(parts);
const record = (id: number, payload: Uint8Array): Buffer => bytes(...encodeRecord(id, payload));

const plain = (s: object): object =>
  Object.fromEntries(Object.entries(s).map(([k, v]) => [k, v instanceof Uint8Array ? [...v] : v]));

describe("RecordDecoder", () => {
  it("hands over the preamble, then records, whatever the fragmentation", () => {
    const wire = bytes(Buffer.alloc(4, 9), record(1, Buffer.from("hello")), record(7, Buffer.alloc(0)));
    for (const piece of [1, 3, 5, wire.length]) {
      const d = new RecordDecoder(1024, 4);
      const steps: unknown[] = [];
      for (let at = 0; at < wire.length; at += piece) {
        d.push(wire.subarray(at, at + piece));
        for (let s = d.next(); s.kind !== "need-more"; s = d.next()) steps.push(plain(s));
      }
      expect(steps).toEqual([
        { kind: "preamble", bytes: [9, 9, 9, 9] },
        { kind: "record", id: 1, payload: [...Buffer.from("hello")] },
        { kind: "record", id: 7, payload: [] },
      ]);
      expect(d.atFrameBoundary).toBe(true);
    }
  });

  it("returns a view, not a copy, of a record that arrived in one piece", () => {
    const wire = record(2, Buffer.from("abc"));
    const d = new RecordDecoder(16);
    d.push(wire);
    const s = d.next();
    expect(s.kind === "record" && s.payload.buffer === wire.buffer).toBe(true);
  });

  it("refuses an oversized length from the header alone, and stays refused", () => {
    const d = new RecordDecoder(16);
    const header = encodeRecord(1, Buffer.alloc(17))[0];
    d.push(header);
    expect(d.next()).toEqual({ kind: "violation", message: "record of 17 bytes exceeds 16" });
    d.push(Buffer.alloc(17));
    expect(d.next().kind).toBe("violation");
  });

  it("is not at a frame boundary in the middle of a record", () => {
    const d = new RecordDecoder(16);
    d.push(record(1, Buffer.from("xyz")).subarray(0, 9));
    expect(d.next().kind).toBe("need-more");
    expect(d.atFrameBoundary).toBe(false);
  });
});

describe("ByteQueue", () => {
  it("peeks big-endian u32s across fragments and copies only when a take spans them", () => {
    const q = new ByteQueue();
    q.push(Uint8Array.of(0, 0));
    q.push(Uint8Array.of(1, 2, 3));
    expect(q.peekUint32(0)).toBe(0x0102);
    expect(q.peekUint32(1)).toBe(0x010203);
    expect(q.peekUint32(2)).toBeUndefined();
    expect([...q.take(3)]).toEqual([0, 0, 1]);
    expect([...q.take(2)]).toEqual([2, 3]);
    expect(q.length).toBe(0);
  });
});
