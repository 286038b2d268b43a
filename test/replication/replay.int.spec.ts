import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventStore } from "#common/event-store.js";
import { replay } from "../../services/replication/src/app/replay.js";
import { formatReplay } from "../../services/replication/src/domain/replay/view.js";
import { completed, markTime, planned, requested, startTestNats, transferred, type TestNats } from "./support.js";

describe("replay", () => {
  let t: TestNats;
  beforeAll(async () => {
    t = await startTestNats();
  });
  afterAll(async () => t?.stop());

  it("shows the states of T1 < T2 < T3, by time and by sequence, and filters by VM", async () => {
    const store = new EventStore(t.nats.js, t.nats.jsm);
    const empty = await replay(t.server.url, { untilTime: new Date() });
    expect(empty).toMatchObject({ events: 0, migrations: [], replications: [] });

    const s1 = await store.append("m1", [requested("m1", "web"), planned("m1")], "m1-a", 0);
    await store.append("m2", [requested("m2", "db")], "m2-a", 0);
    const t1 = await markTime();
    const s2 = await store.append("m1", [transferred("m1", 0)], "m1-b");
    const t2 = await markTime();
    await store.append("m1", [transferred("m1", 1), completed("m1")], "m1-c");
    await store.append("m2", [planned("m2")], "m2-b");
    const t3 = await markTime();

    const states = async (o: Parameters<typeof replay>[1]) =>
      Object.fromEntries((await replay(t.server.url, o)).migrations.map((m) => [m.id, m.status]));
    expect(await states({ untilTime: t1 })).toEqual({ m1: "planned", m2: "requested" });
    expect(await states({ untilTime: t2 })).toEqual({ m1: "running", m2: "requested" });
    expect(await states({ untilTime: t3 })).toEqual({ m1: "completed", m2: "planned" });
    expect(await states({ untilSeq: s1 })).toEqual({ m1: "planned" });
    expect(await states({ untilSeq: s2 })).toEqual({ m1: "running", m2: "requested" });

    const web = await replay(t.server.url, { untilTime: t2, vm: "web" });
    expect(web.migrations.map((m) => m.id)).toEqual(["m1"]);
    expect(web.migrations[0]?.batches.map((b) => b.status)).toEqual(["done", "pending"]);
    expect(formatReplay(web)).toContain("migration m1 vm=web running batches 1/2");
    expect(web.migrations[0]?.batches[0]?.chunks).toBeUndefined(); // states, not chunk lists
    const detailed = await replay(t.server.url, { untilTime: t2, vm: "web", chunks: true });
    expect(detailed.migrations[0]?.batches[0]?.chunks?.map((c) => c.offset)).toEqual([0]);

    // Read-only: no consumer was left behind.
    const consumers = await t.nats.jsm.consumers.list("DWCP_EVT").next();
    expect(consumers.filter((c) => c.config.durable_name)).toEqual([]);
  });
});
