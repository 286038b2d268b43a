import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { FederationEvent } from "#schemas/federation.js";
import { startFederatedStack, type FederatedStack } from "../../cli/federated-stack.js";
import { main } from "../../cli/main.js";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { sha256File } from "../../cli/verify.js";
import { CMD_STREAM, EVT_STREAM } from "#common/layout.js";
import { siteIdentity } from "../../services/federation/src/app/federation.js";
import { Site } from "../../services/federation/src/app/site.js";
import { decodeAppend, fedNames, readStream } from "../../services/federation/src/infra/fed-streams.js";
import { readMirroredMigration } from "../../services/federation/src/infra/migration-mirrors.js";
import { eventsOf, makeImage } from "../support/stack.js";

const MiB = 1024 * 1024;
const quiet = (level: string) => pino({ name: "dwcp", level: process.env["DWCP_LOG_LEVEL"] ?? level });

/** Runs the CLI in-process and returns what it printed. */
async function cli(argv: string[]): Promise<{ code: number; out: string }> {
  let out = "";
  const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  try {
    return { code: await main(argv), out };
  } finally {
    spy.mockRestore();
  }
}

/** The events in a site's own federation log. */
async function fedLog(fs: FederatedStack, site: string): Promise<FederationEvent[]> {
  const { js, jsm } = fs.stack(site).nats;
  const out: FederationEvent[] = [];
  await readStream(js, jsm, fedNames.stream(site), 1, (m) => out.push(...(decodeAppend(m.data) ?? [])));
  return out;
}

/**
 * Migrates a small VM from `from` (a host of `site`) to `to` at another site and returns the
 * migration's id. The site's recorder handles completions one at a time in the order of the
 * site's migration log, so once it has recorded this one it has handled every earlier one: a
 * marker after which the absence of an earlier record is an observation, not a guess.
 */
async function markerMigration(
  fs: FederatedStack,
  site: string,
  from: string,
  to: string,
  vm: string,
): Promise<string> {
  const path = `vms/${vm}/disk.img`;
  await makeImage(fs.stack(site), from, path, { sizeBytes: 256 * 1024, seed: 21 });
  const command = buildStart({
    vm,
    source: { host: from, volumes: [{ path, kind: "disk" }] },
    destination: { host: to, dir: `incoming/${vm}` },
  });
  const r = await runMigration(fs.stack(site).nats, command, { timeoutMs: 60_000 });
  expect(r, `marker migration ${vm}`).toMatchObject({ state: "completed" });
  return r.migrationId;
}

describe("cross-site migration between two federated sites", () => {
  let fs: FederatedStack;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "dwcp-xsite-test-"));
    fs = await startFederatedStack(
      { dataDir, sites: { east: ["e1"], west: ["w1"] }, healthIntervalMs: 0 },
      quiet("warn"),
    );
  });

  afterAll(async () => {
    await fs?.stop();
    if (!process.env["DWCP_KEEP_TEST_DATA"]) rmSync(dataDir, { recursive: true, force: true });
  });

  it("completes byte-identical, owned by the source site, seen at both; the VM moves to the destination", async () => {
    const east = fs.stack("east");
    const west = fs.stack("west");
    const disk = await makeImage(east, "e1", "vms/web-1/disk.img", {
      sizeBytes: 24 * MiB + 4_321,
      zeroFraction: 0.6,
      seed: 11,
    });
    const mem = await makeImage(east, "e1", "vms/web-1/mem.img", { sizeBytes: 8 * MiB, zeroFraction: 0.3, seed: 12 });
    const labels = { app: "web", tier: "front" };
    await fs.fed.site("east").placeVm("web-1", { host: "e1", labels });
    await fs.fed.site("west").waitFor((v) => v.vms["web-1"]?.site === "east", 10_000, "web-1 placed at east");

    // The command goes to the source host's site; its coordinator owns the migration.
    const command = buildStart({
      vm: "web-1",
      source: {
        host: "e1",
        volumes: [
          { path: "vms/web-1/disk.img", kind: "disk" },
          { path: "vms/web-1/mem.img", kind: "memory" },
        ],
      },
      destination: { host: "w1", dir: "incoming/web-1" },
      options: { chunkSizeBytes: 1 * MiB, batchSizeBytes: 4 * MiB },
    });
    const r = await runMigration(east.nats, command, { timeoutMs: 120_000 });
    expect(r, JSON.stringify(r)).toMatchObject({ state: "completed", bytes: 32 * MiB + 4_321 });
    const id = r.migrationId;

    // Byte-identical at the other site's host.
    for (const [src, name] of [
      [disk, "disk.img"],
      [mem, "mem.img"],
    ] as const) {
      expect(await sha256File(join(west.root("w1"), "incoming/web-1", name)), name).toBe(await sha256File(src));
    }

    // The owner's log holds every event; west holds the same events, with east's sequences, in its
    // mirror; west's own log and command stream never saw the migration (only the owner writes).
    const owned = await eventsOf(east, id);
    expect(owned.at(-1)?.event.type).toBe("MigrationCompleted");
    await expect
      .poll(async () => (await readMirroredMigration(west.nats.js, west.nats.jsm, id))?.events.length, {
        timeout: 10_000,
      })
      .toBe(owned.length);
    const mirrored = await readMirroredMigration(west.nats.js, west.nats.jsm, id);
    expect(mirrored?.site).toBe("east");
    expect(mirrored?.events).toEqual(owned);
    expect(await eventsOf(west, id)).toEqual([]);
    expect((await west.nats.jsm.streams.info(CMD_STREAM)).state.messages).toBe(0);
    expect((await west.nats.jsm.streams.info(EVT_STREAM)).state.messages).toBe(0);

    // Both sites' CLIs show it.
    for (const site of [east, west]) {
      // The site's credentials: its cli role's key and certificate, the federation's trust.json.
      const trust = ["--data-dir", site.credentials.dir];
      const shown = await cli(["status", id, "--nats", site.url, "--json", ...trust]);
      expect(shown.code).toBe(0);
      expect(JSON.parse(shown.out)).toMatchObject({ migrationId: id, state: "completed", vm: "web-1" });
      const listed = await cli(["events", id, "--nats", site.url, "--json", ...trust]);
      expect((JSON.parse(listed.out) as unknown[]).length).toBe(owned.length);
    }

    // Placement: web-1 runs at west on w1, by this migration, in every site's view.
    for (const s of ["east", "west"]) {
      await fs.fed.site(s).waitFor((v) => v.vms["web-1"]?.site === "west", 15_000, `web-1 at west, seen from ${s}`);
      expect(fs.fed.site(s).view.vms["web-1"]).toMatchObject({
        status: "placed",
        site: "west",
        host: "w1",
        migrationId: id,
        labels,
        by: "east",
      });
    }
    const completedAt = owned.at(-1)!.event.at;
    const moves = (await fedLog(fs, "east")).filter((e) => e.type === "VmMoved");
    expect(moves).toEqual([
      expect.objectContaining({ vm: "web-1", from: "east", to: "west", host: "w1", migrationId: id, at: completedAt }),
    ]);

    // A restarted recorder replays the log and records nothing twice. East's own recorder is
    // stopped meanwhile, so that the marker (a later cross-site migration) can only be recorded
    // by the restarted one, which replays web-1's completion before it reaches the marker's.
    const eastSite = fs.fed.site("east");
    await eastSite.stop();
    const again = new Site(
      { site: "east", natsUrl: east.url, peers: ["west"], healthIntervalMs: 0, migrations: true },
      { log: quiet("warn"), ...siteIdentity(fs.fed.credentials, "east") },
    );
    try {
      await again.start({ join: false });
      const marker = await markerMigration(fs, "east", "e1", "w1", "web-1-marker");
      await again.waitFor(
        (v) => v.vms["web-1-marker"]?.migrationId === marker,
        30_000,
        "the marker migration recorded by the restarted recorder",
      );
    } finally {
      await again.stop();
      await eastSite.start({ join: false });
    }
    const movedAgain = (await fedLog(fs, "east")).filter((e) => e.type === "VmMoved");
    expect(movedAgain.filter((e) => e.vm === "web-1")).toHaveLength(1);
    expect(movedAgain.map((e) => e.vm)).toEqual(["web-1", "web-1-marker"]);
  });

  it("a migration sent to the destination's site is refused: the source host's site owns it", async () => {
    const west = fs.stack("west");
    await makeImage(fs.stack("east"), "e1", "vms/web-2/disk.img", { sizeBytes: 1 * MiB, seed: 14 });
    const command = buildStart({
      vm: "web-2",
      source: { host: "e1", volumes: [{ path: "vms/web-2/disk.img", kind: "disk" }] },
      destination: { host: "w1", dir: "incoming/web-2" },
    });
    const r = await runMigration(west.nats, command, { timeoutMs: 30_000 });
    expect(r).toMatchObject({ state: "rejected", reason: "UNKNOWN_HOST" });
    expect(r.message).toContain("belongs to site east");
  });

  it("a migration within one site leaves the placement alone", async () => {
    const west = fs.stack("west");
    await makeImage(west, "w1", "vms/db-1/disk.img", { sizeBytes: 2 * MiB, seed: 13 });
    const before = (await fedLog(fs, "west")).length;
    const command = buildStart({
      vm: "db-1",
      source: { host: "w1", volumes: [{ path: "vms/db-1/disk.img", kind: "disk" }] },
      destination: { host: "w1", dir: "moved/db-1" },
    });
    expect(await runMigration(west.nats, command, { timeoutMs: 60_000 })).toMatchObject({ state: "completed" });
    // West's recorder has handled db-1's completion once it has recorded the later marker.
    const marker = await markerMigration(fs, "west", "w1", "e1", "db-1-marker");
    await fs.fed
      .site("west")
      .waitFor((v) => v.vms["db-1-marker"]?.migrationId === marker, 30_000, "the marker migration recorded");
    const added = (await fedLog(fs, "west")).slice(before);
    expect(added).toEqual([expect.objectContaining({ type: "VmMoved", vm: "db-1-marker", migrationId: marker })]);
    expect(fs.fed.site("west").view.vms["db-1"]).toBeUndefined();
  });
});
