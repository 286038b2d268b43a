// Replication's failures must be visible: a sync logs its start and its commit, the agent the
// snapshot it stored, and a refused sync a warning, each bound to {svc, vm, snapshotId, host}.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateImage } from "../../cli/image.js";
import { DestinationAgent, inProcess } from "../../services/replication/src/app/destination.js";
import { syncOnce, type SyncOptions } from "../../services/replication/src/app/sync.js";
import { ReplicationLog } from "../../services/replication/src/infra/replication-log.js";
import { startTestNats, type TestNats } from "./support.js";

type Line = Record<string, unknown>;

function capturingLogger(): { logger: pino.Logger; lines: Line[] } {
  const lines: Line[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const text of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(text) as Line);
      done();
    },
  });
  return { logger: pino({ level: "debug" }, sink), lines };
}

describe("replication logs", () => {
  let t: TestNats;
  let base: Omit<SyncOptions, "transport" | "logger">;
  let agent: DestinationAgent;
  const source = capturingLogger();
  const destination = capturingLogger();

  beforeAll(async () => {
    t = await startTestNats();
    agent = await DestinationAgent.open(join(t.dir, "b", ".dwcp-store"), destination.logger);
    const disk = join(t.dir, "a", "disk.img");
    await mkdir(join(t.dir, "a"), { recursive: true });
    await generateImage(disk, { sizeBytes: 2 * 1024 * 1024, zeroFraction: 0.5, seed: 9 });
    base = {
      vm: "web",
      sources: [disk],
      sourceHost: "a",
      destinationHost: "b",
      storePath: agent.store.dir,
      log: new ReplicationLog(t.nats),
      stateDir: join(t.dir, "a", ".dwcp-repl"),
    };
  });
  afterAll(async () => t?.stop());

  it("a sync's start and commit, and the agent's stored snapshot", async () => {
    const r = await syncOnce({ ...base, transport: inProcess(agent), logger: source.logger });
    const bound = { svc: "replication", vm: "web", host: "a" };
    expect(source.lines.find((l) => l["msg"] === "sync started")).toMatchObject({ ...bound, snapshotId: r.snapshotId });
    expect(source.lines.find((l) => l["msg"] === "snapshot committed")).toMatchObject({
      ...bound,
      snapshotId: r.snapshotId,
      bytes: r.bytes,
    });
    expect(destination.lines.find((l) => l["msg"] === "snapshot stored")).toMatchObject({
      vm: "web",
      snapshotId: r.snapshotId,
    });
  });

  it("a sync that fails is logged as a warning with its code", async () => {
    const err = await syncOnce({
      ...base,
      sources: [base.sources[0]!, base.sources[0]!],
      transport: inProcess(agent),
      logger: source.logger,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(source.lines.find((l) => l["msg"] === "sync failed; the previous snapshot stays the latest")).toMatchObject({
      level: 40,
      vm: "web",
      code: "DUPLICATE_VOLUME",
    });
  });
});
