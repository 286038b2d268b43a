import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AckPolicy, DeliverPolicy } from "@nats-io/jetstream";
import { createUser } from "@nats-io/nkeys";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MigrationEvent } from "#schemas/index.js";
import { VersionConflictError } from "../errors.js";
import { migrationEvents } from "../event-store.js";
import { ensureLayout, EVT_STREAM, subjects } from "../layout.js";
import { ackConfirmed, connectNats, isTransientNatsError, type Nats } from "../nats.js";
import { startNatsServer, type NatsServerHandle } from "../nats-server.js";
import { EventSigner, EventVerifier } from "../signing.js";
import { EventStore, type EventStoreOptions } from "./event-store.js";
import { DedupIdSquattedError } from "./signed-append.js";
import { handle, storePort } from "./handle.js";

// Appends that outlive a NATS hiccup: resent with the same msgID, stored once, and the caller
// learns the sequence of the copy that was stored. A private nats-server per file.
let dir: string;
let server: NatsServerHandle;
let nats: Nats;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dwcp-evstore-"));
  server = await startNatsServer({ storeDir: join(dir, "nats") });
  nats = await connectNats(server.url, "event-store-test");
});

afterAll(async () => {
  await nats?.nc.close().catch(() => undefined);
  if (server) {
    server.process.kill("SIGCONT");
    await server.stop("SIGKILL");
  }
  rmSync(dir, { recursive: true, force: true });
});

/** The generic store over the migrations' subjects (the events and subjects of a real aggregate). */
const migrations = (opts: EventStoreOptions = {}) => new EventStore(nats.js, nats.jsm, migrationEvents, opts);

const requested = (id: string): MigrationEvent => ({
  type: "MigrationRequested",
  version: 1,
  migrationId: id,
  at: new Date().toISOString(),
  commandId: `c-${id}`,
  vm: id,
  source: { host: "a", volumes: [{ path: "vms/d.img", kind: "disk" }] },
  destination: { host: "b", dir: `in/${id}` },
  options: { chunkSizeBytes: 1 << 20, batchSizeBytes: 1 << 26, verify: true },
});

const storedOn = async (id: string): Promise<number> => {
  const info = await nats.jsm.streams.info(EVT_STREAM, { subjects_filter: subjects.migration(id) });
  return info.state.subjects?.[subjects.migration(id)] ?? 0;
};

describe("EventStore.append through NATS hiccups", () => {
  it("keeps resending while no stream answers, and appends once one does", async () => {
    const store = migrations({ resendForMs: 20_000, publishTimeoutMs: 500 });
    // No DWCP_EVT yet: every publish meets "no responders" until the layout exists.
    const pending = store.append("early", [requested("early")], "early.req");
    await ensureLayout(nats.nc, nats.jsm, { replicas: 1 });
    expect(await pending).toBeGreaterThan(0);
    expect(await storedOn("early")).toBe(1);
  });

  it("resends an unacknowledged publish with its msgID: stored once, the stored copy's sequence returned", async () => {
    const store = migrations({ resendForMs: 20_000, publishTimeoutMs: 300 });
    const first = await store.append("stalled", [requested("stalled")], "stalled.req", 0);
    // A server that stops answering (SIGSTOP) for longer than several publish timeouts: the
    // publishes queue up in its socket and are all processed once it runs again. With an
    // expected sequence (2.9 refuses the resends as "wrong last sequence") and without.
    server.process.kill("SIGSTOP");
    await stopped(server.process.pid ?? 0);
    const sent = nats.nc.stats().outMsgs;
    const pending = store.append("stalled", [requested("stalled")], "stalled.second", first);
    const unchecked = store.append("stalled", [requested("stalled")], "stalled.fact");
    // Released once the two publishes have gone out with at least two resends each (counted on
    // the connection), not after a guessed time: else nothing may have been resent at all.
    await sentAtLeast(sent + 6, 10_000);
    server.process.kill("SIGCONT");
    const [seq, factSeq] = await Promise.all([pending, unchecked]);
    expect(await storedOn("stalled")).toBe(3);
    expect(seq).toBe(first + 1);
    expect(factSeq).toBe(first + 2);
    expect(await store.lastSeq("stalled")).toBe(factSeq);
  });

  it("refuses a stale expected sequence at once (no resending)", async () => {
    const store = migrations({ resendForMs: 20_000 });
    await store.append("occ", [requested("occ")], "occ.1", 0);
    const started = performance.now();
    await expect(store.append("occ", [requested("occ")], "occ.2", 0)).rejects.toBeInstanceOf(VersionConflictError);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it("gives up after resendForMs with the last transient error", async () => {
    const store = migrations({ resendForMs: 600, publishTimeoutMs: 200 });
    server.process.kill("SIGSTOP");
    try {
      await stopped(server.process.pid ?? 0);
      await expect(store.append("gone", [requested("gone")], "gone.req")).rejects.toSatisfy(isTransientNatsError);
    } finally {
      server.process.kill("SIGCONT");
    }
  });
});

describe("EventStore reads", () => {
  it("reports a malformed stored event through onInvalid, folds the rest, and expects the last sequence", async () => {
    const store = migrations();
    const first = await store.append("bad", [requested("bad")], "bad.req", 0);
    const junk = await nats.js.publish(subjects.migration("bad"), "not an event");
    const invalid: number[] = [];
    const types = { initial: (): string[] => [], evolve: (s: string[], e: MigrationEvent) => [...s, e.type] };
    const loaded = await store.load(types, "bad", (seq) => invalid.push(seq));
    expect(invalid).toEqual([junk.seq]);
    expect(loaded.seq).toBe(junk.seq);
    expect(loaded.state).toEqual(["MigrationRequested"]);
    expect((await store.read("bad")).map((s) => s.seq)).toEqual([first]);
  });

  it("a pipelined batch that meets a moved subject is refused as a conflict at its first message", async () => {
    const store = migrations();
    const seq = await store.append("pipe", [requested("pipe")], "pipe.req", 0);
    await store.append("pipe", [requested("pipe")], "pipe.other", seq);
    const body = migrationEvents.codec.encode(requested("pipe"));
    const batch = [0, 1, 2].map((i) => ({ data: body, msgID: `pipe.batch.${i}` }));
    const err = await store.appendMessages("pipe", batch, seq, { pipelined: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VersionConflictError);
    expect(err).toMatchObject({ expectedSeq: seq });
  });
});

describe("handle against JetStream", () => {
  it("a writer that lost the race re-reads, re-decides and appends after the winner", async () => {
    const store = migrations();
    // A toy aggregate over migration events: the number of requests, at most `limit`.
    const counting = {
      initial: () => 0,
      evolve: (n: number) => n + 1,
      decide: (n: number, limit: number) => (n < limit ? [requested("race")] : []),
    };
    const port = storePort(store, counting);
    let raced = false;
    const racing = {
      ...port,
      load: async (id: string) => {
        const loaded = await port.load(id);
        // Another writer appends between our read and our append, once.
        if (!raced) await store.append(id, [requested("race")], "race.other", loaded.seq);
        raced = true;
        return loaded;
      },
    };
    const conflicts: number[] = [];
    const cmd = { id: "race", command: 3, msgIdBase: "race.mine", context: () => undefined };
    const r = await handle(counting, racing, cmd, { onConflict: (a) => conflicts.push(a) });
    expect(conflicts).toEqual([1]);
    expect(r.state).toBe(2);
    expect(r.seq).toBe(await store.lastSeq("race"));
    expect(await storedOn("race")).toBe(2);
  });
});

describe("ackConfirmed", () => {
  it("acks a work item and learns that the server has it", async () => {
    await nats.jsm.streams.add({ name: "ACKTEST", subjects: ["acktest.>"] });
    await nats.jsm.consumers.add("ACKTEST", {
      durable_name: "w",
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
    });
    await nats.js.publish("acktest.1", "x");
    const consumer = await nats.js.consumers.get("ACKTEST", "w");
    const m = await consumer.next({ expires: 2_000 });
    if (!m) throw new Error("no message");
    expect(await ackConfirmed(nats.nc, m)).toBe(true);
    const info = await consumer.info();
    expect(info.num_ack_pending).toBe(0);
    expect(info.ack_floor.stream_seq).toBe(1);
  });
});

/** Resolves once the test's connection has sent `count` messages in all (polled every 20 ms). */
async function sentAtLeast(count: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (nats.nc.stats().outMsgs < count) {
    if (Date.now() > deadline)
      throw new Error(`${nats.nc.stats().outMsgs} of ${count} messages sent within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Resolves once every thread of `pid` is stopped. kill() returns before a busy multi-threaded
 * server has stopped all its threads; a CI run once had its publish acknowledged in that window.
 * Nothing signals the stop to a process that is not the parent's waitpid, so /proc is polled.
 */
async function stopped(pid: number): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const states = readdirSync(`/proc/${pid}/task`).map((t) =>
      readFileSync(`/proc/${pid}/task/${t}/stat`, "utf8")
        .replace(/^.*\) /s, "")
        .charAt(0),
    );
    if (states.every((st) => st === "T" || st === "t")) return;
    if (Date.now() > deadline) throw new Error(`process ${pid} did not stop: thread states ${states.join("")}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("signed appends", () => {
  const coordinatorKey = new EventSigner(createUser());
  const moverKey = new EventSigner(createUser());
  const verifier = new EventVerifier({
    version: 1,
    principals: {
      [coordinatorKey.publicKey]: { role: "coordinator" },
      [moverKey.publicKey]: { role: "mover-a", host: "a" },
    },
  });
  const as = (signer: EventSigner) => migrations({ trust: { insecure: false, signer, verifier } });

  it("signs what it appends and reads back who produced each event; unsigned ones are marked", async () => {
    await ensureLayout(nats.nc, nats.jsm, { replicas: 1 });
    await as(coordinatorKey).append("signed1", [requested("signed1")], "signed1.req", 0);
    await nats.js.publish(subjects.migration("signed1"), JSON.stringify(requested("signed1")));
    const read = await as(moverKey).read("signed1");
    expect(read.map((e) => e.provenance)).toEqual([
      { kind: "signed", principal: { key: coordinatorKey.publicKey, role: "coordinator" } },
      { kind: "unverified", reason: "unsigned" },
    ]);
    // Readers without trust do not vouch for anything.
    expect((await migrations().read("signed1"))[0]?.provenance).toEqual({ kind: "unverified", reason: "not checked" });
  });

  it("keys msgIDs: a retry of the same base is deduplicated, the stored msgID is not the bare base", async () => {
    const store = as(coordinatorKey);
    const seq = await store.append("keyed", [requested("keyed")], "keyed.req", 0);
    expect(await store.append("keyed", [requested("keyed")], "keyed.req", 0)).toBe(seq);
    const stored = await nats.jsm.streams.getMessage(EVT_STREAM, { seq });
    expect(stored?.header.get("Nats-Msg-Id")).toBe(coordinatorKey.msgId("keyed.req"));
    expect(stored?.header.get("Nats-Msg-Id")).not.toBe("keyed.req");
  });

  it("refuses a duplicate answer whose stored message is not ours: a squatted msgID", async () => {
    const store = as(coordinatorKey);
    const msgID = coordinatorKey.msgId("squat.plan");
    // Someone who learned the msgID publishes junk under it first, on another subject...
    await nats.js.publish(subjects.migration("elsewhere"), "junk", { msgID });
    const err = await store.append("squat", [requested("squat")], "squat.plan").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DedupIdSquattedError);
    expect((err as DedupIdSquattedError).code).toBe("DEDUP_ID_SQUATTED");
    // ...or on the right subject, but not signed with our key.
    const id2 = coordinatorKey.msgId("squat2.plan");
    await nats.js.publish(subjects.migration("squat2"), JSON.stringify(requested("squat2")), { msgID: id2 });
    await expect(as(coordinatorKey).append("squat2", [requested("squat2")], "squat2.plan")).rejects.toThrow(
      /not signed with this producer's key/,
    );
  });
});
