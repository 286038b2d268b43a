import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createUser } from "@nats-io/nkeys";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StartMigration, VmDefinition, type MigrationRequested } from "#schemas/index.js";
import { silentLogger } from "#common/logger.js";
import { connectNats, type Nats } from "#common/nats.js";
import { startNatsServer, type NatsServerHandle } from "#common/nats-server.js";
import { subjects } from "#common/layout.js";
import { EventSigner, EventVerifier, type EventTrust } from "#common/signing.js";
import type { IncomingRequest, LiveDestination } from "../infra/vm/live-incoming.js";
import { LiveRpcClient, LiveRpcError, serveLive } from "./live-rpc.js";

// The source mover's LiveRpcClient against the destination's serveLive over a real nats-server;
// the destination's IncomingVms is a recorder here (live.int.spec.ts drives the real one).
// Requests are signed: the destination believes only the mover of the source host they name.

const signers = { a: new EventSigner(createUser()), c: new EventSigner(createUser()) };
const verifier = new EventVerifier({
  version: 1,
  principals: {
    [signers.a.publicKey]: { role: "mover-a", host: "a" },
    [signers.c.publicKey]: { role: "mover-c", host: "c" },
  },
});
const signedBy = (s: EventSigner | undefined): EventTrust => ({
  insecure: false,
  verifier,
  ...(s ? { signer: s } : {}),
});

let dir: string;
let server: NatsServerHandle;
let nats: Nats;
const calls: Array<[string, unknown]> = [];
const requested = new Map<string, MigrationRequested>();

const recorder: LiveDestination = {
  prepare: (req: IncomingRequest) => {
    calls.push(["prepare", req]);
    return Promise.resolve();
  },
  finish: (id) => {
    calls.push(["finish", id]);
    return id === "broken" ? Promise.reject(new Error("the guest did not resume")) : Promise.resolve();
  },
  problem: (id) => Promise.resolve(id === "m1" ? undefined : `no QEMU for ${id}`),
  abort: (id) => {
    calls.push(["abort", id]);
    return Promise.resolve();
  },
};

const request = (id: string, over: Record<string, unknown> = {}): MigrationRequested => {
  const c = StartMigration.parse({
    type: "StartMigration",
    version: 1,
    commandId: id,
    vm: "guest1",
    mode: "live",
    source: { host: "a", volumes: [] },
    destination: { host: "b", dir: "vms/guest1" },
    ...over,
  });
  return { ...c, type: "MigrationRequested", migrationId: id, at: new Date().toISOString(), mode: c.mode, live: {} };
};

const definition = VmDefinition.parse({
  version: 1,
  name: "guest1",
  root: "/srv/a",
  memoryMiB: 64,
  disks: [{ id: "disk0", path: "guest1/disk0.img" }],
});
/** A source mover's client; a null signer sends unsigned requests. */
const client = (sourceHost = "a", signer: EventSigner | null = sourceHost === "c" ? signers.c : signers.a) =>
  new LiveRpcClient(nats.nc, {
    sourceHost,
    destHost: "b",
    destDir: "vms/guest1",
    trust: signedBy(signer ?? undefined),
  });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dwcp-live-rpc-"));
  server = await startNatsServer({ storeDir: join(dir, "nats") });
  nats = await connectNats(server.url, "live-rpc");
  requested.set("m1", request("m1"));
  requested.set("broken", request("broken"));
  const file = StartMigration.parse({
    type: "StartMigration",
    version: 1,
    commandId: "f1",
    vm: "guest1",
    source: { host: "a", volumes: [{ path: "/x.img", kind: "disk" }] },
    destination: { host: "b", dir: "vms/guest1" },
  });
  requested.set("f1", { ...file, type: "MigrationRequested", migrationId: "f1", at: new Date().toISOString() });
  serveLive(nats.nc, {
    host: "b",
    destination: recorder,
    requested: (id) => Promise.resolve(requested.get(id)),
    resolveDir: (d) => Promise.resolve(`/srv/b/${d}`),
    trust: signedBy(undefined),
    log: silentLogger,
  });
  await nats.nc.flush();
});

afterAll(async () => {
  await nats?.nc.close().catch(() => undefined);
  if (server) await server.stop("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

describe("live requests between movers", () => {
  it("prepare, problem, finish and abort reach the destination, prepare with its own root", async () => {
    calls.length = 0;
    const c = client();
    await c.prepare({ migrationId: "m1", sourceHost: "a", definition, diskSizes: { disk0: 64 << 20 } });
    expect(await c.problem("m1")).toBeUndefined();
    await c.finish("m1");
    await c.abort("m1");
    expect(calls).toEqual([
      [
        "prepare",
        {
          migrationId: "m1",
          sourceHost: "a",
          definition: { ...definition, root: "/srv/b/vms/guest1" },
          diskSizes: { disk0: 64 << 20 },
        },
      ],
      ["finish", "m1"],
      ["abort", "m1"],
    ]);
    // The destination's failure reaches the source as a LiveRpcError with its message.
    await expect(c.finish("broken")).rejects.toThrow(/the guest did not resume/);
    expect(await c.problem("broken")).toBe("no QEMU for broken");
  });

  it("refuses a request from another host, for a file or unknown migration, or naming another VM", async () => {
    calls.length = 0;
    const prepare = (c: LiveRpcClient, id: string, def = definition) =>
      c.prepare({ migrationId: id, sourceHost: "x", definition: def, diskSizes: { disk0: 1 << 20 } });
    await expect(prepare(client("c"), "m1")).rejects.toThrow(/comes from host a, not from c/);
    await expect(client("c").abort("m1")).rejects.toBeInstanceOf(LiveRpcError);
    await expect(prepare(client(), "f1")).rejects.toThrow(/is not a live migration/);
    await expect(prepare(client(), "nope")).rejects.toThrow(/no migration nope was requested/);
    await expect(prepare(client(), "m1", { ...definition, name: "other" })).rejects.toThrow(
      /moves VM guest1, not other/,
    );
    expect(calls).toEqual([]);
  });

  it("refuses a request not signed by the mover of the source host it names", async () => {
    calls.length = 0;
    // Mover c, which may publish on b's live subject, speaks for host a: its signature gives it away.
    await expect(client("a", signers.c).abort("m1")).rejects.toThrow(/signed by mover-c, not by the mover of host a/);
    await expect(client("a", null).abort("m1")).rejects.toThrow(/not signed by a known principal \(unsigned\)/);
    const stranger = new EventSigner(createUser());
    await expect(client("a", stranger).finish("m1")).rejects.toThrow(/unknown signer/);
    expect(calls).toEqual([]);
  });

  it("answers a malformed request with a refusal, not silence", async () => {
    const reply = await nats.nc.request(subjects.moverLive("b"), JSON.stringify({ op: "livePrepare" }), {
      timeout: 10_000,
    });
    expect(reply.json()).toMatchObject({ ok: false, reason: "PROTOCOL_ERROR" });
  });
});
