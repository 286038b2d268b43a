import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { eachLine, MAX_LINE_BYTES, peekHead } from "./backup-file.js";

/** What eachLine must see and digest, computed the simple way: split, then hash line by line. */
function reference(text: string): { lines: string[]; sha256: string } {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const h = createHash("sha256");
  for (const l of lines) {
    if (l.startsWith("T")) break;
    h.update(`${l}\n`);
  }
  return { lines, sha256: h.digest("hex") };
}

async function* pieces(buf: Buffer, cuts: number[]): AsyncGenerator<Buffer> {
  let at = 0;
  for (const c of [...new Set(cuts.map((x) => x % (buf.length + 1)))].sort((a, b) => a - b)) {
    await Promise.resolve(); // a read stream hands pieces over asynchronously
    if (c > at) yield buf.subarray(at, c);
    at = Math.max(at, c);
  }
  if (at < buf.length) yield buf.subarray(at);
}

describe("backup line reader", () => {
  it("sees every line and digests those before the trailer, however the reads cut them (seeded)", async () => {
    const line = fc.string({ maxLength: 40 }).map((s) => s.replace(/\n/g, " ").replace(/^T/, "t"));
    await fc.assert(
      fc.asyncProperty(
        fc.array(line, { maxLength: 30 }),
        fc.boolean(),
        fc.boolean(),
        fc.array(fc.nat(), { maxLength: 12 }),
        async (lines, withTrailer, endsWithNewline, cuts) => {
          const all = withTrailer ? [...lines, "TRAILER"] : lines;
          const text = all.join("\n") + (endsWithNewline && all.length > 0 ? "\n" : "");
          const seen: string[] = [];
          const h = createHash("sha256");
          await eachLine(pieces(Buffer.from(text), cuts), h, (l) => {
            seen.push(l.toString("utf8"));
            return l.toString("utf8").startsWith("T") ? "trailer" : undefined;
          });
          const want = reference(text);
          expect(seen).toEqual(want.lines);
          expect(h.digest("hex")).toBe(want.sha256);
        },
      ),
      { seed: 4242, numRuns: 500 },
    );
  });
});

describe("backup line bound", () => {
  it("refuses a line longer than MAX_LINE_BYTES as it is read, without joining it", async () => {
    const mib = Buffer.alloc(1 << 20, 0x61);
    let served = 0;
    async function* endless(): AsyncGenerator<Buffer> {
      yield Buffer.from('{"header":1}\n{"a":"');
      for (;;) {
        served += mib.length;
        await Promise.resolve();
        yield mib;
      }
    }
    const lines: number[] = [];
    const err = await eachLine(
      endless(),
      createHash("sha256"),
      (l) => void lines.push(l.length),
      (bytes) => new RangeError(`too long: ${bytes}`),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect(lines).toEqual([12]);
    expect(served).toBeLessThanOrEqual(MAX_LINE_BYTES + (1 << 20));
  });
});

describe("message head peek", () => {
  const head = { stream: "DWCP_EVT", seq: 42, ts: "1764115200000000042", subject: "dwcp.evt.migration.m1" };
  it("reads the head of every line BackupWriter writes, with or without headers, JSON or base64", () => {
    fc.assert(
      fc.property(
        fc.option(
          fc.array(fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,20}$/), fc.stringMatching(/^[\w.:-]{0,40}$/)), {
            minLength: 1,
            maxLength: 4,
          }),
          { nil: undefined },
        ),
        fc.oneof(fc.record({ json: fc.jsonValue() }), fc.record({ data: fc.base64String() })),
        (headers, payload) => {
          const m = { ...head, ...(headers ? { headers } : {}) };
          expect(peekHead(JSON.stringify({ ...m, ...payload }))).toEqual(m);
        },
      ),
      { seed: 7, numRuns: 300 },
    );
  });
  it("leaves any other form to the whole parse", () => {
    for (const text of [
      JSON.stringify({ seq: 42, stream: "DWCP_EVT", ts: head.ts, subject: head.subject, json: {} }), // other key order
      JSON.stringify({ ...head, subject: 'dwcp.evt."odd"', json: {} }), // an escape
      JSON.stringify({ ...head, seq: 0, json: {} }),
      JSON.stringify({ ...head, headers: [["k", "\n"]], json: {} }),
      '{"trailer":true,"count":1,"sha256":"00"}',
    ])
      expect(peekHead(text), text).toBeUndefined();
  });
});
