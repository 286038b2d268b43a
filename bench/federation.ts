// npm run bench:federation [-- --json] [--sites 5] [--repeats 30] [--changes 300] [--kib 100]
//                           [--topology hub|star] [--append-kib 64 (0: one event per message)]
//                           [--wan continental [--wan-loss 0] [--wan-cc reno]] (--wan: as root)
// Starts a federation on loopback (one nats-server per site plus the hub, one Site per server,
// all Sites in this process) and measures, from the writing site to every other site's folded view:
//  - full state: one site writes ~100 KiB of federation events (VmPlaced with spec and labels) in
//    one pipelined batch; the time from the first publish until every other site has folded the
//    last one. Each repeat writes new VMs.
//  - per change: one VmPlaced at a time; the time from the publish until every other site has
//    folded it (and, reported separately, until each single site has).
// Timestamps are taken in the listeners of each site's view, so they include the JetStream ack,
// the mirror hop through the hub, the ordered consumer, zod validation and the fold.
// --wan <profile>: every server in its own namespace of the packet-level WAN emulator (test/wan/:
// the hub at site "hub", each site's server at its own site), so every leafnode link (TLS,
// site-<id> certificates, as on loopback) crosses the profile's link and a change travels
// site -> hub -> site, twice half the RTT. The Sites stay in this process and reach their own
// server over loopback through a bridge into its namespace (test/wan/ns-bridge.ts), not the link.
// --wan-loss replaces the profile's loss (percent per packet and direction), e.g. 0 to separate
// what the round trips cost from what the losses cost. --wan-cc sets the sites' default congestion
// control (the servers' leafnode sockets use it); default: the host's.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import type { FederationEvent } from "#schemas/federation.js";
import { findNatsServer } from "#common/nats-server.js";
import { provisionFederation, type FederationCredentials } from "#common/credentials/federation.js";
import {
  startFederation,
  type FederationHandle,
  type ServerPlacement,
} from "../services/federation/src/app/federation.js";
import { siteIds } from "../services/federation/src/config.js";
import { bridgeInto, type Bridge } from "../test/wan/ns-bridge.js";
import { PROFILES, startWan, wanUnavailable, type ProfileName, type WanProfile } from "../test/wan/wan.js";
import type { Site } from "../services/federation/src/app/site.js";
import type { FederationCommand } from "../services/federation/src/domain/federation/decide.js";
import { canonicalJson } from "../services/federation/src/domain/federation/state.js";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    sites: { type: "string", default: "5" },
    repeats: { type: "string", default: "30" },
    changes: { type: "string", default: "300" },
    kib: { type: "string", default: "100" },
    topology: { type: "string", default: "hub" },
    "append-kib": { type: "string", default: "64" },
    keep: { type: "boolean", default: false },
    // Relay the leafnode links through this process's LinkProxy, as the tests do to cut them.
    proxy: { type: "boolean", default: false },
    wan: { type: "string" },
    // The profile's loss per packet and direction, in percent, replaced (0: the same link, lossless).
    "wan-loss": { type: "string" },
    "wan-cc": { type: "string" },
  },
});
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const int = (name: string, v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got "${v}"`);
  return n;
};
const SITES = int("sites", values.sites);
const REPEATS = int("repeats", values.repeats);
const CHANGES = int("changes", values.changes);
const TARGET_BYTES = int("kib", values.kib) * 1024;
const APPEND_KIB = Number(values["append-kib"]);
if (!Number.isInteger(APPEND_KIB) || APPEND_KIB < 0 || APPEND_KIB > 192)
  throw new Error(`--append-kib must be 0..192 (0: one event per message), got "${values["append-kib"]}"`);
const WARMUP = 3;
if (SITES < 2) throw new Error("--sites must be at least 2");
if (values.topology !== "hub" && values.topology !== "star")
  throw new Error(`--topology must be hub or star, got "${values.topology}"`);
const WAN = values.wan === undefined ? undefined : wanProfileOf(values.wan, values["wan-loss"]);
if (WAN && (values.topology !== "hub" || values.proxy))
  throw new Error("--wan runs the hub topology without --proxy (the links are the emulator's)");
if (!WAN && values["wan-loss"] !== undefined) throw new Error("--wan-loss needs --wan");
if (!WAN && values["wan-cc"] !== undefined) throw new Error("--wan-cc needs --wan");
if (values["wan-cc"] !== undefined && !/^[a-z0-9_]{1,16}$/.test(values["wan-cc"]))
  throw new Error(`--wan-cc must name a congestion control (bbr, reno, cubic), got "${values["wan-cc"]}"`);

function wanProfileOf(name: string, loss: string | undefined): WanProfile {
  if (!(name in PROFILES)) throw new Error(`--wan must be one of ${Object.keys(PROFILES).join(", ")}, got "${name}"`);
  const p: WanProfile = PROFILES[name as ProfileName];
  if (loss === undefined) return p;
  const lossPct = Number(loss);
  if (loss.trim() === "" || !Number.isFinite(lossPct) || lossPct < 0 || lossPct > 50)
    throw new Error(`--wan-loss must be a percentage in [0, 50], got "${loss}"`);
  return { ...p, lossPct };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}
const stats = (xs: number[]): { p50: number; p99: number; min: number; max: number } => {
  const s = [...xs].sort((a, b) => a - b);
  const r = (x: number): number => Math.round(x * 100) / 100;
  return { p50: r(percentile(s, 50)), p99: r(percentile(s, 99)), min: r(s[0] ?? NaN), max: r(s[s.length - 1] ?? NaN) };
};

/** A VM placement of realistic size: spec, host and a handful of labels (~400 bytes as JSON). */
function placement(name: string, i: number): FederationCommand {
  return {
    type: "PlaceVm",
    vm: name,
    host: `host-${i % 64}`,
    spec: { vcpus: 2 + (i % 14), memoryBytes: (4 + (i % 60)) * 2 ** 30, diskBytes: (40 + i) * 2 ** 30 },
    labels: {
      app: `service-${i % 37}`,
      team: `team-${i % 11}`,
      env: i % 3 === 0 ? "production" : "staging",
      image: `registry.example.internal/platform/base-image:2026.${i % 12}.${i % 28}`,
      owner: `owner-${i % 101}@example.com`,
      zone: `zone-${i % 4}`,
      tier: ["web", "api", "db", "cache"][i % 4]!,
    },
  };
}

/** Resolves per reader with the time (performance.now) its view first holds `writer`'s seq `target`. */
function arrivals(readers: readonly Site[], writer: string, target: number): Array<Promise<number>> {
  return readers.map(
    (r) =>
      new Promise<number>((resolve, reject) => {
        const done = (): boolean => r.read((v) => v.sites[writer]?.lastSeq ?? 0) >= target;
        if (done()) return resolve(performance.now());
        const timer = setTimeout(
          () => (off(), reject(new Error(`site ${r.id} did not receive ${writer}.${target} within 30 s`))),
          30_000,
        );
        const off = r.onChange((v) => {
          if ((v.sites[writer]?.lastSeq ?? 0) < target) return;
          const t = performance.now();
          clearTimeout(timer);
          off();
          resolve(t);
        });
      }),
  );
}

async function fullState(
  writer: Site,
  readers: readonly Site[],
  rep: number,
): Promise<{ ms: number; bytes: number; events: number }> {
  const commands: FederationCommand[] = [];
  const at = new Date().toISOString();
  // Sized as the events will be: the command plus the envelope decide adds.
  for (let i = 0, bytes = 0; bytes < TARGET_BYTES; i++) {
    const c = placement(`r${rep}-vm${i}`, i);
    commands.push(c);
    bytes += Buffer.byteLength(
      JSON.stringify({ ...c, type: "VmPlaced", version: 1, site: writer.id, seq: 100_000, at }),
    );
  }
  const start = lastSeq(writer);
  const waits = arrivals(readers, writer.id, start + commands.length);
  const t0 = performance.now();
  const events = await writer.execute(commands);
  const last = Math.max(...(await Promise.all(waits)));
  if (events.length !== commands.length) throw new Error(`expected ${commands.length} events, got ${events.length}`);
  return { ms: last - t0, bytes: sizeOf(events), events: events.length };
}

const lastSeq = (s: Site): number => s.read((v) => v.sites[s.id]?.lastSeq ?? 0);
const sizeOf = (events: readonly FederationEvent[]): number =>
  events.reduce((n, e) => n + Buffer.byteLength(JSON.stringify(e)), 0);

async function oneChange(writer: Site, readers: readonly Site[], i: number): Promise<{ all: number; each: number[] }> {
  const target = lastSeq(writer) + 1;
  const waits = arrivals(readers, writer.id, target);
  const t0 = performance.now();
  await writer.execute([placement(`c-vm${i}`, i)]);
  const times = (await Promise.all(waits)).map((t) => t - t0);
  return { all: Math.max(...times), each: times };
}

function machine(): Record<string, unknown> {
  const bin = findNatsServer();
  const natsVersion = bin ? execFileSync(bin, ["--version"]).toString().trim() : "unknown";
  return {
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    memory_gib: Math.round(totalmem() / 2 ** 30),
    // The machine may be shared: the load at the end says how much else was running.
    load_avg_1m: Math.round((loadavg()[0] ?? 0) * 100) / 100,
    node: process.version,
    kernel: release(),
    nats_server: natsVersion,
  };
}

async function run(fed: FederationHandle): Promise<Record<string, unknown>> {
  const [writer, ...readers] = fed.sites.map((s) => s.site) as [Site, ...Site[]];
  log(
    `${fed.sites.length} sites (${fed.topology}); writer ${writer.id}; ` +
      `${REPEATS} x ${Math.round(TARGET_BYTES / 1024)} KiB, ${CHANGES} single changes`,
  );
  const full: number[] = [];
  let bytes = 0;
  let events = 0;
  for (let rep = 0; rep < REPEATS + WARMUP; rep++) {
    const r = await fullState(writer, readers, rep);
    if (rep < WARMUP) continue;
    full.push(r.ms);
    bytes = r.bytes;
    events = r.events;
  }
  const all: number[] = [];
  const each: number[] = [];
  for (let i = 0; i < CHANGES + WARMUP * 10; i++) {
    const r = await oneChange(writer, readers, i);
    if (i < WARMUP * 10) continue;
    all.push(r.all);
    each.push(...r.each);
  }
  // Every view is the same fold: the timings above measured complete, not partial, copies.
  const digest = canonicalJson(writer.view);
  for (const r of readers)
    if (canonicalJson(r.view) !== digest) throw new Error(`site ${r.id} did not converge to ${writer.id}'s view`);
  const f = stats(full);
  const c = stats(all);
  const e = stats(each);
  return {
    sites: fed.sites.length,
    topology: fed.topology,
    full_state_bytes: bytes,
    full_state_events: events,
    append_kib: APPEND_KIB,
    link_proxy: values.proxy,
    full_state_p50_ms: f.p50,
    full_state_p99_ms: f.p99,
    full_state_min_ms: f.min,
    full_state_max_ms: f.max,
    full_state_mb_per_s: Math.round((bytes / (f.p50 / 1000) / 1e6) * 10) / 10,
    change_p50_ms: c.p50,
    change_p99_ms: c.p99,
    change_min_ms: c.min,
    change_max_ms: c.max,
    change_one_site_p50_ms: e.p50,
    change_one_site_p99_ms: e.p99,
    ...(WAN
      ? {
          wan_profile: WAN.name,
          rtt_ms: WAN.rttMs,
          link_mbps: WAN.rateMbit,
          loss_pct: WAN.lossPct,
          congestion_control:
            values["wan-cc"] ?? readFileSync("/proc/sys/net/ipv4/tcp_congestion_control", "utf8").trim(),
          full_state_target_ms: WAN.rttMs + 30,
        }
      : {}),
    repeats: REPEATS,
    changes: CHANGES,
    warmup: { full_state: WARMUP, changes: WARMUP * 10 },
    machine: machine(),
  };
}

/** Each server in its own namespace of an emulated WAN (hub at "hub"), reached over bridges. */
async function onWan(
  profile: WanProfile,
  dataDir: string,
): Promise<{ placement: ServerPlacement; credentials: FederationCredentials; stop(): Promise<void> }> {
  const why = wanUnavailable();
  if (why) throw new Error(`bench:federation --wan: ${why}`);
  const natsBin = findNatsServer();
  if (!natsBin) throw new Error("nats-server is not installed");
  const ids = siteIds(SITES);
  const cc = values["wan-cc"];
  const wan = await startWan({ profile, sites: ["hub", ...ids], ...(cc ? { congestionControl: cc } : {}) });
  const bridges: Bridge[] = [];
  const stop = async (): Promise<void> => {
    await Promise.allSettled(bridges.map((b) => b.close()));
    await wan.stop();
  };
  try {
    const credentials = await provisionFederation(
      join(dataDir, "credentials"),
      Object.fromEntries(ids.map((id) => [id, []])),
      { hubNames: [wan.address("hub")] },
    );
    const placement: ServerPlacement = {
      bin: (name) => {
        const wrapper = join(dataDir, `nats-server-in-${name}.sh`);
        writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${wan.ns(name)} ${natsBin} "$@"\n`, { mode: 0o755 });
        return wrapper;
      },
      hubLeafHost: wan.address("hub"),
      reach: async (id, port) => {
        const b = await bridgeInto(wan, id, port, dataDir);
        bridges.push(b);
        return b.url;
      },
    };
    return { placement, credentials, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "dwcp-bench-fed-"));
  // Site logs (warnings and worse) go to stderr: stdout carries only the result.
  const siteLog = pino({ name: "dwcp", level: process.env["DWCP_LOG_LEVEL"] ?? "warn" }, pino.destination(2));
  const wan = WAN ? await onWan(WAN, dataDir) : undefined;
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => {
      log(`${signal}: removing the emulated WAN`);
      void (wan?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
    });
  let fed: FederationHandle;
  try {
    fed = await startFederation(
      {
        sites: SITES,
        dataDir,
        healthIntervalMs: 0,
        topology: values.topology as "hub" | "star",
        partitionable: values.proxy,
        maxAppendBytes: APPEND_KIB * 1024,
      },
      { log: siteLog, ...(wan ? { credentials: wan.credentials, placement: wan.placement } : {}) },
    );
  } catch (err) {
    await wan?.stop();
    throw err;
  }
  try {
    const result = await run(fed);
    if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      const n = (key: string): number => result[key] as number;
      const fullTarget = WAN ? WAN.rttMs + 30 : 50;
      log(
        `full state (${n("full_state_bytes")} B in ${n("full_state_events")} events): ` +
          `p50 ${n("full_state_p50_ms")} ms, p99 ${n("full_state_p99_ms")} ms (target <= ${fullTarget} ms p50)`,
      );
      log(
        `per change, all sites: p50 ${n("change_p50_ms")} ms, p99 ${n("change_p99_ms")} ms` +
          (WAN ? "" : " (target <= 10 ms p50)"),
      );
      log(`per change, one site: p50 ${n("change_one_site_p50_ms")} ms, p99 ${n("change_one_site_p99_ms")} ms`);
    }
  } finally {
    await fed.stop();
    await wan?.stop();
    if (!values.keep) rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
