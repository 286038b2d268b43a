// Connections refused before they authenticate cost an attacker nothing but a connect: each must
// still be refused, but the receiver's log must not grow with them. Real data servers (TLS and
// plaintext) on real sockets, 200 refused connections each.
import { randomBytes } from "node:crypto";
import { mkdir, rm } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { provision, type Provisioned } from "#common/credentials/provision.js";
import { REFUSALS_SUMMARY_MSG } from "#common/secure-link/refusal-log.js";
import { parseAddress } from "../../services/mover/src/domain/data-channel/address.js";
import { startDataServer, type DataServer } from "../../services/mover/src/infra/data-channel/server.js";
import { capturingLog, linkTlsOf, tempDir } from "../support/data-channel.js";

const CONNECTIONS = 200;
const BURST = 5;
let work: string;
let pki: Provisioned;

beforeAll(async () => {
  work = await tempDir("refusals");
  pki = await provision(join(work, "pki"), { hosts: ["a", "b"] });
  await mkdir(join(work, "root"));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Opens a connection, sends junk, resolves once the server has closed it (refused). */
function junkConnection(address: string): Promise<void> {
  const target = parseAddress(address);
  if (target === undefined) throw new Error(`bad address ${address}`);
  return new Promise<void>((resolve) => {
    const s = connect(target);
    s.on("error", () => undefined);
    s.once("connect", () => s.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4))));
    s.on("data", () => undefined); // a CHALLENGE (plaintext) or an alert: read and ignore
    s.once("close", () => resolve());
  });
}

/** `n` junk connections, `parallel` at a time. */
async function flood(address: string, n: number, parallel = 20): Promise<number> {
  let next = 0;
  let closed = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < n) {
        next++;
        await junkConnection(address);
        closed++;
      }
    }),
  );
  return closed;
}

describe.each([
  { mode: "TLS", refusalMsg: "link refused: TLS failed" },
  { mode: "plaintext", refusalMsg: "data connection refused before authentication" },
])("refusals before authentication on a $mode data channel", ({ mode, refusalMsg }) => {
  const receiver = capturingLog();
  let server: DataServer;

  beforeAll(async () => {
    server = await startDataServer({
      host: "b",
      listenHost: "127.0.0.1",
      listenPort: 0,
      secret: randomBytes(32),
      roots: [join(work, "root")],
      log: receiver.log,
      helloTimeoutMs: 5000,
      refusalLog: { intervalMs: 10 * 60_000, burst: BURST },
      ...(mode === "TLS" ? { tls: linkTlsOf(pki, "mover-b") } : {}),
    });
  });

  afterAll(async () => {
    await server?.close();
  });

  it(`refuses all ${CONNECTIONS} connections with at most ${BURST + 1} log lines, counting every one`, async () => {
    expect(await flood(server.address, CONNECTIONS)).toBe(CONNECTIONS);
    await server.close(); // writes the open window's summary
    const singles = receiver.lines.filter((l) => l["msg"] === refusalMsg);
    const summaries = receiver.lines.filter((l) => l["msg"] === REFUSALS_SUMMARY_MSG);
    expect(singles).toHaveLength(BURST);
    expect(singles[0]).toMatchObject({ remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/) as unknown });
    expect(summaries).toHaveLength(1);
    expect(summaries[0]).toMatchObject({ refused: CONNECTIONS, suppressed: CONNECTIONS - BURST, peers: 1 });
    const byReason = summaries[0]?.["byReason"] as Record<string, number>;
    expect(Object.values(byReason).reduce((a, b) => a + b, 0)).toBe(CONNECTIONS);
    // Nothing else about these connections was logged line by line.
    const warnings = receiver.lines.filter((l) => (l["level"] as number) >= 40);
    expect(warnings.length).toBeLessThanOrEqual(BURST + 1);
  });
});
