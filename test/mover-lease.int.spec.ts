import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import { MoverRegistration } from "#schemas/index.js";
import { MOVERS_BUCKET } from "#common/layout.js";
import { moverRole } from "#common/credentials/provision.js";
import { spawnService } from "../cli/stack.js";
import { startTestStack } from "./support/stack.js";

let stack: Awaited<ReturnType<typeof startTestStack>>;

beforeAll(async () => {
  stack = await startTestStack();
});
afterAll(async () => stack?.cleanup());

const holder = async (host: string): Promise<MoverRegistration | undefined> => {
  const e = await (await new Kvm(stack.nats.nc).open(MOVERS_BUCKET)).get(host);
  return e?.operation === "PUT" ? MoverRegistration.parse(e.json()) : undefined;
};

describe("a mover's host id is a lease", () => {
  it("a second process claiming a live host id is refused and exits; the holder keeps it", async () => {
    const before = await holder("a");
    const log = join(stack.opts.dataDir, "logs", "mover-a-intruder.log");
    const args = ["mover", "--host", "a", "--root", stack.root("b"), "--listen", "127.0.0.1:0", "--nats", stack.url];
    const intruder = spawnService("mover-a-intruder", args, log, stack.env(moverRole("a")));
    try {
      expect(await intruder.exited).toBe(1);
    } finally {
      await intruder.stop("SIGKILL");
    }
    expect(readFileSync(log, "utf8")).toMatch(/host id a is held by another live mover \(pid \d+/);
    const after = await holder("a");
    expect(after?.pid, "the running mover still holds host a").toBe(before?.pid);
    expect(after?.dataAddress).toBe(before?.dataAddress);
  });

  it("a dead holder's lease expires: a new mover takes the host id", async () => {
    const old = stack.movers.get("a");
    await old?.stop("SIGKILL");
    const started = Date.now();
    const fresh = await stack.startMover("a");
    expect((await holder("a"))?.pid).toBe(fresh.child.pid);
    expect(Date.now() - started, "within the lease period plus start-up").toBeLessThan(60_000);
  });

  it("a mover stopped cleanly gives its lease back", async () => {
    await stack.movers.get("b")?.stop("SIGTERM");
    expect(await holder("b")).toBeUndefined();
    const started = Date.now();
    await stack.startMover("b");
    expect(Date.now() - started, "no lease to wait for").toBeLessThan(30_000);
  });
});
