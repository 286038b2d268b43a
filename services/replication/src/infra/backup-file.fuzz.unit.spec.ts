import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DwcpError } from "#common/errors.js";
import { nanosToMs, payloadBytes } from "../domain/backup/format.js";
import { scanBackupBytes } from "./backup-file.js";

// Fuzzing the backup reader: 100,000 small backups, each a valid file (header, messages, a
// trailer with the right count and SHA-256) then damaged: bytes flipped, lines dropped, cut or
// duplicated, junk lines, and in half of them the trailer's digest recomputed so the damage is
// only caught by the line checks. Read in memory, cut into random pieces. The reader must
// resolve or reject with a DwcpError (BackupCorruptError), never crash with anything else.

const STREAM = "DWCP_EVT";
const header = { format: "dwcp-log-backup", version: 1, createdAt: "2026-01-01T00:00:00Z" };

const message = fc.record({
  subject: fc.constantFrom("dwcp.evt.migration.m1", "dwcp.evt.replication.v", "x", "dwcp.evt.migration.m2"),
  headers: fc.option(fc.array(fc.tuple(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 })), { maxLength: 2 }), {
    nil: undefined,
  }),
  payload: fc.oneof(
    fc.record({ json: fc.jsonValue({ maxDepth: 2 }) }),
    fc.record({ data: fc.base64String({ maxLength: 24 }) }),
  ),
});

const damage = fc.record({
  flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
  drop: fc.option(fc.nat(), { nil: undefined }),
  dup: fc.option(fc.nat(), { nil: undefined }),
  junk: fc.option(fc.tuple(fc.nat(), fc.string({ maxLength: 40 })), { nil: undefined }),
  cut: fc.option(fc.nat(), { nil: undefined }),
  redigest: fc.boolean(),
});

type ValueOf<A> = A extends fc.Arbitrary<infer T> ? T : never;

function build(messages: Array<ValueOf<typeof message>>, count: number): string[] {
  const lines = [
    JSON.stringify({
      ...header,
      streams: [{ name: STREAM, config: {}, firstSeq: 1, lastSeq: messages.length, messages: messages.length }],
    }),
  ];
  messages.forEach((m, i) =>
    lines.push(
      JSON.stringify({
        stream: STREAM,
        seq: i + 1,
        ts: String(1_700_000_000_000_000_000n + BigInt(i)),
        subject: m.subject,
        ...(m.headers ? { headers: m.headers } : {}),
        ...m.payload,
      }),
    ),
  );
  const body = lines.map((l) => `${l}\n`).join("");
  lines.push(JSON.stringify({ trailer: true, count, sha256: createHash("sha256").update(body).digest("hex") }));
  return lines;
}

function damaged(lines: string[], d: ValueOf<typeof damage> | undefined): Buffer {
  if (d === undefined) return Buffer.from(lines.map((l) => `${l}\n`).join(""));
  const out = [...lines];
  if (d.drop !== undefined && out.length > 0) out.splice(d.drop % out.length, 1);
  if (d.dup !== undefined && out.length > 0) out.splice(d.dup % out.length, 0, out[d.dup % out.length]!);
  if (d.junk !== undefined) out.splice(d.junk[0] % (out.length + 1), 0, d.junk[1]);
  if (d.redigest && out.length > 1) {
    const body = out
      .slice(0, -1)
      .map((l) => `${l}\n`)
      .join("");
    out[out.length - 1] = JSON.stringify({
      trailer: true,
      count: out.length - 2,
      sha256: createHash("sha256").update(body).digest("hex"),
    });
  }
  let bytes = Buffer.from(out.map((l) => `${l}\n`).join(""));
  for (const [at, value] of d.flips) if (bytes.length > 0) bytes[at % bytes.length] = value;
  if (d.cut !== undefined) bytes = bytes.subarray(0, d.cut % (bytes.length + 1));
  return bytes;
}

function pieces(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of [...points, bytes.length]) {
    if (p > at) out.push(bytes.subarray(at, p));
    at = Math.max(at, p);
  }
  return out;
}

describe("backup reader under fuzzing", () => {
  it("reads or refuses with a DwcpError, never crashes (100,000 cases)", async () => {
    let read = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(message, { maxLength: 3 }),
        fc.oneof({ weight: 1, arbitrary: fc.constant(undefined) }, { weight: 3, arbitrary: damage }),
        fc.array(fc.nat(600), { maxLength: 3 }),
        fc.boolean(),
        async (messages, d, cuts, partitioned) => {
          const bytes = damaged(build(messages, messages.length), d);
          const opts = partitioned ? { only: (s: string) => s.endsWith("m1"), onOther: () => undefined } : {};
          try {
            await scanBackupBytes(
              "fuzz.jsonl",
              pieces(bytes, cuts),
              (m) => {
                payloadBytes(m);
                nanosToMs(m.ts);
              },
              opts,
            );
            read++;
          } catch (err) {
            if (!(err instanceof DwcpError)) throw err;
            refused++;
          }
        },
      ),
      { numRuns: 100_000, seed: 20261205 },
    );
    expect(read).toBeGreaterThan(1000);
    expect(refused).toBeGreaterThan(1000);
  }, 120_000);
});
