import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Kvm, KvWatchInclude, type KV, type KvEntry, type KvWatchEntry } from "@nats-io/kv";
import { errors } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MOVERS_BUCKET } from "#common/layout.js";
import { moverRole } from "#common/credentials/provision.js";
import { MoverRegistration } from "#schemas/index.js";
import { createLogger } from "#common/logger.js";
import { HostLeaseHeldError } from "../../services/mover/src/errors.js";
import { Registry } from "../../services/mover/src/infra/registry.js";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { spawnService, type ServiceProcess } from "../../cli/stack.js";
import { sha256File } from "../../cli/verify.js";
import { makeImage, startTestStack } from "../support/stack.js";

// A mover's host id is a lease in dwcp_movers: a second process claiming a live one is refused,
// a clean stop releases it, and a holder that stalled past the TTL loses it for good.
const MiB = 1024 * 1024;
/** Renewed every second, expired after three (DWCP_LEASE_TTL_MS defaults to three heartbeats). */
const LEASE_ENV = { DWCP_LEASE_HEARTBEAT_MS: "1000" };
type TestStack = Awaited<ReturnType<typeof startTestStack>>;
let stack: TestStack;
let kv: KV;
const extra: ServiceProcess[] = [];

beforeAll(async () => {
  stack = await startTestStack({ env: LEASE_ENV });
  kv = await new Kvm(stack.nats.nc).open(MOVERS_BUCKET);
});
afterAll(async () => {
  for (const p of extra) p.child.kill("SIGCONT");
  await Promise.allSettled(extra.map((p) => p.stop()));
  await stack?.cleanup();
});

/** Another `dwcp mover --host a` beside the stack's (its own log), as an operator would start one. */
function moverA(name: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): ServiceProcess {
  const argv = ["mover", "--host", "a", "--root", stack.root("a"), "--listen", "127.0.0.1:0", ...args];
  const log = join(stack.opts.dataDir, `${name}.log`);
  const p = spawnService(name, argv, log, { ...stack.env(moverRole("a")), ...env });
  extra.push(p);
  return p;
}

/** Resolves with the first line of the service's log that contains `text` (read as it grows). */
async function logged(proc: ServiceProcess, text: string, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = readFileSync(proc.logFile, "utf8")
      .split("\n")
      .find((l) => l.includes(text));
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`"${text}" not in ${proc.name}'s log within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function holderOfA(): Promise<MoverRegistration | undefined> {
  const e = await kv.get("a");
  return e?.operation === "PUT" ? MoverRegistration.parse(e.json()) : undefined;
}

/** Every write of key a from now on, and a way to await the first that matches. */
async function watchA(): Promise<{
  seen: MoverRegistration[];
  until(match: (r: MoverRegistration) => boolean, timeoutMs?: number): Promise<MoverRegistration>;
  stop(): void;
}> {
  const seen: MoverRegistration[] = [];
  const waiters: Array<{ match: (r: MoverRegistration) => boolean; done: (r: MoverRegistration) => void }> = [];
  const watch = await kv.watch({ key: "a", include: KvWatchInclude.UpdatesOnly });
  void (async () => {
    for await (const e of watch as AsyncIterable<KvWatchEntry>) {
      if (e.operation !== "PUT") continue;
      const r = MoverRegistration.parse(e.json());
      seen.push(r);
      for (const w of waiters.splice(0))
        if (w.match(r)) w.done(r);
        else waiters.push(w);
    }
  })();
  return {
    seen,
    until: (match, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const hit = seen.find(match);
        if (hit) return resolve(hit);
        const timer = setTimeout(() => reject(new Error("no such write of key a in time")), timeoutMs);
        waiters.push({ match, done: (r) => (clearTimeout(timer), resolve(r)) });
      }),
    stop: () => watch.stop(),
  };
}

/** The entry of `key` once it satisfies `match` (polled: the registry changes no state peers see). */
async function untilEntry(key: string, match: (e: KvEntry) => boolean, timeoutMs = 10_000): Promise<KvEntry> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const e = await kv.get(key);
    if (e && match(e)) return e;
    if (Date.now() > deadline) throw new Error(`key ${key} not as expected within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function migrate(id: string): Promise<void> {
  const src = await makeImage(stack, "a", `vms/${id}/disk.img`, { sizeBytes: 8 * MiB, zeroFraction: 0.3, seed: 7 });
  const command = buildStart({
    vm: id,
    source: { host: "a", volumes: [{ path: `vms/${id}/disk.img`, kind: "disk" }] },
    destination: { host: "b", dir: `in/${id}` },
    options: { chunkSizeBytes: 1 * MiB, batchSizeBytes: 4 * MiB },
  });
  const r = await runMigration(stack.nats, command, { timeoutMs: 120_000 });
  expect(r.state).toBe("completed");
  expect(await sha256File(join(stack.root("b"), `in/${id}/disk.img`))).toBe(await sha256File(src));
}

describe("a mover's host id is a lease", () => {
  it("a second mover claiming a live host id exits non-zero with a clear error; the first keeps serving", async () => {
    const first = stack.movers.get("a");
    const held = await holderOfA();
    expect(held?.pid).toBe(first?.child.pid);
    const second = moverA("mover-a-second");
    expect(await second.exited).toBe(1);
    const line = await logged(second, "service failed");
    expect(line).toContain(`host id \\"a\\" is held by another mover (pid ${held?.pid}, started ${held?.startedAt}`);
    expect(line).toContain(`data address ${held?.dataAddress}`);
    expect(line).toContain("stop that mover, or wait until its lease expires (3.0 s after its last heartbeat)");
    expect(line).toContain("HOST_LEASE_HELD");
    // The holder's entry was never touched, and the host's work still gets done.
    expect((await holderOfA())?.pid).toBe(first?.child.pid);
    await migrate("refused");
  });

  it("after the holder stops cleanly a new mover claims the host at once", async () => {
    const first = stack.movers.get("a");
    await first?.stop();
    expect(await first?.exited).toBe(0);
    // Released, not left to expire: a claimant that would wait ten minutes for an expiry starts now.
    expect((await kv.get("a"))?.operation).toBe("DEL");
    const next = moverA("mover-a-next", [], { DWCP_LEASE_TTL_MS: "600000" });
    await logged(next, '"mover running"');
    expect((await holderOfA())?.pid).toBe(next.child.pid);
    await migrate("successor");
  });

  it("a holder stalled past the TTL loses the lease to a new mover and never renews over it", async () => {
    const stale = extra.at(-1)!;
    expect((await holderOfA())?.pid).toBe(stale.child.pid);
    const writes = await watchA();
    try {
      stale.child.kill("SIGSTOP");
      // A standby starts beside the holder and takes the lease over once it lapses.
      const taker = moverA("mover-a-taker", ["--standby"]);
      await logged(taker, '"mover running"');
      const takeover = await writes.until((r) => r.pid === taker.child.pid);
      await logged(taker, "took over the host lease");
      stale.child.kill("SIGCONT");
      await logged(stale, "lost the host lease to another mover");
      // Two renewals of the new holder after the stale one learned it: nothing of the stale one between.
      const after = writes.seen.length;
      await writes.until((r) => r.pid === taker.child.pid && writes.seen.indexOf(r) >= after + 1);
      const since = writes.seen.slice(writes.seen.indexOf(takeover));
      expect(since.every((r) => r.pid === taker.child.pid)).toBe(true);
      expect((await holderOfA())?.pid).toBe(taker.child.pid);
      // The stale one carries on as a standby (it shares the queue), and migrations complete.
      expect(stale.child.exitCode).toBeNull();
      await migrate("after-takeover");
      expect(writes.seen.slice(writes.seen.indexOf(takeover)).every((r) => r.pid === taker.child.pid)).toBe(true);
    } finally {
      stale.child.kill("SIGCONT");
      writes.stop();
    }
  });

  it("a holder re-adopts its own renewal stored after its answer was lost, yet yields to another writer", async () => {
    const lease = { heartbeatMs: 50, ttlMs: 60_000 };
    const r = new Registry(kv, "own", [], createLogger("test"), undefined, lease);
    await r.register("127.0.0.1:9100");
    try {
      // What a mover finds after a cut connection: a renewal that timed out was applied on
      // reconnection, so its entry moved to a revision it never heard of, holding its own value.
      const mine = MoverRegistration.parse((await kv.get("own"))?.json());
      const late = await kv.put("own", JSON.stringify({ ...mine, heartbeatAt: new Date().toISOString() }));
      const next = await untilEntry("own", (e) => e.revision > late || !r.holding);
      expect(r.holding).toBe(true);
      expect(MoverRegistration.parse(next.json()).instance).toBe(mine.instance);
      // Another process with the same pid and start time (a container) is a genuine takeover.
      const other = { ...mine, instance: randomUUID(), heartbeatAt: new Date().toISOString() };
      const taken = await kv.put("own", JSON.stringify(other));
      await untilEntry("own", (e) => e.revision > taken || !r.holding);
      expect(r.holding).toBe(false);
      expect((await kv.get("own"))?.revision).toBe(taken);
    } finally {
      await r.stop();
    }
  });

  it("a claim waits through requests a young cluster leaves unanswered and adopts its own stored write", async () => {
    // A mover starting beside a cluster still electing the bucket's leader: its first read times
    // out, and its create is stored though the answer never comes.
    let failedGets = 0;
    let lostCreates = 0;
    const flaky = new Proxy(kv, {
      get(target, prop, receiver) {
        if (prop === "get")
          return async (key: string) => {
            if (failedGets++ < 2) throw new errors.TimeoutError();
            return target.get(key);
          };
        if (prop === "create")
          return async (key: string, value: string) => {
            await target.create(key, value);
            if (lostCreates++ === 0) throw new errors.TimeoutError();
            throw new Error("create resent after our own write was stored: must have been an update");
          };
        return Reflect.get(target, prop, receiver) as unknown;
      },
    });
    const r = new Registry(flaky, "young", [], createLogger("test"), undefined, {
      heartbeatMs: 60_000,
      ttlMs: 180_000,
    });
    await r.refuseIfHeld();
    await r.register("127.0.0.1:9200");
    try {
      expect(r.holding).toBe(true);
      expect(failedGets).toBeGreaterThan(2);
      expect(lostCreates).toBe(1);
      const entry = await kv.get("young");
      expect(MoverRegistration.parse(entry?.json()).dataAddress).toBe("127.0.0.1:9200");
    } finally {
      await r.stop();
    }
    expect((await kv.get("young"))?.operation).toBe("DEL");
  });

  it("of claimants racing for a free or released host id exactly one wins", async () => {
    const log = createLogger("test");
    const lease = { heartbeatMs: 60_000, ttlMs: 180_000 };
    const race = async (): Promise<void> => {
      const rs = [0, 1, 2, 3].map(() => new Registry(kv, "race", [], log, undefined, lease));
      const outcomes = await Promise.allSettled(rs.map((r, i) => r.register(`127.0.0.1:${9000 + i}`)));
      expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
      for (const o of outcomes) if (o.status === "rejected") expect(o.reason).toBeInstanceOf(HostLeaseHeldError);
      expect(rs.filter((r) => r.holding)).toHaveLength(1);
      await Promise.all(rs.map((r) => r.stop()));
    };
    await race(); // nobody ever registered the host
    expect((await kv.get("race"))?.operation).toBe("DEL");
    await race(); // its holder released it
  });
});
