import { randomBytes } from "node:crypto";
import { fork, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import pino from "pino";
import { provision } from "#common/credentials/provision.js";
import type { Logger } from "#common/logger.js";
import { linkTlsOf } from "../../test/support/data-channel.js";
import { migrateLive, type LiveReport } from "../../services/mover/src/infra/vm/live.js";
import type { LiveDestination } from "../../services/mover/src/infra/vm/live-incoming.js";
import type { DestArgs, DestCall, DestReady, DestReply } from "./live-dest-process.js";

const DEST_ENTRY = resolve(import.meta.dirname, "live-dest-process.ts");

// dwcp's side of the live-migration bench: the live engine (migrateLive) from host a to an
// IncomingVms at host b behind b's data server (mutual TLS on loopback, or across the emulated
// WAN from b's site), b in its own process as a destination mover is; the source's tunnels run in
// this process, as in the source mover.
// `LiveMigrator` is the seam: a control-plane driver (`dwcp migrate --live`) can replace it.

/** Host b on the emulated WAN: its network namespace and its address there. */
export interface BenchSite {
  netns: string;
  address: string;
}

/** One live migration as the bench measures it (ms from performance.now()). */
export interface LiveFigures {
  /** Migration requested (destination not yet started) to the guest running at the destination. */
  totalMs: number;
  /** Disk mirror started to the guest running at the destination. */
  fromMirrorMs: number;
  /** Mirror started to every disk READY. */
  mirrorMs: number;
  /** QEMU's figure (query-migrate at the source): source stop to the end of the RAM stream. */
  downtimeMs: number;
  /** Source STOP event to the guest running at the destination (the pause as the guest sees it). */
  pausedMs: number;
  ramTransferredBytes: number;
}

export interface LiveRequest {
  /** The source VM's state directory (runner.ts), its name "g". */
  stateDir: string;
  /** The destination's root. */
  destRoot: string;
  /** The destination's state directory (where its QEMU runs). */
  destStateDir: string;
}

export interface LiveMigrator {
  migrate(req: LiveRequest): Promise<LiveFigures>;
  close(): Promise<void>;
}

/**
 * Host b as its own process (live-dest-process.ts: b's data server with mutual TLS and an
 * IncomingVms for `destStateDir`), and a migrator that drives it from host a.
 */
export async function startDwcpMigrator(
  dir: string,
  destRoot: string,
  destStateDir: string,
  log?: Logger,
  site?: BenchSite,
): Promise<LiveMigrator> {
  const quiet: Logger = log ?? pino({ level: process.env["DWCP_BENCH_LOG"] ?? "silent" });
  const secret = randomBytes(32);
  const pki = await provision(join(dir, "pki"), { hosts: ["a", "b"] });
  const b = pki.roles.get("mover-b");
  if (b === undefined) throw new Error("no credentials for mover-b");
  const args: DestArgs = {
    caFile: pki.caFile,
    certFile: b.certFile,
    keyFile: b.keyFile,
    secretHex: secret.toString("hex"),
    destRoot,
    destStateDir,
    ...(site === undefined ? {} : { listenHost: site.address }),
  };
  const child =
    site === undefined
      ? fork(DEST_ENTRY, [JSON.stringify(args)], {
          execArgv: ["--import", "tsx"],
          stdio: ["ignore", "inherit", "inherit", "ipc"],
        })
      : // In the site's network namespace (ip netns exec execs node, which finds its IPC channel).
        spawn(
          "ip",
          ["netns", "exec", site.netns, process.execPath, "--import", "tsx", DEST_ENTRY, JSON.stringify(args)],
          {
            stdio: ["ignore", "inherit", "inherit", "ipc"],
          },
        );
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const gone = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const pending = new Map<number, { resolve: (v: string | undefined) => void; reject: (e: Error) => void }>();
  // Calls still waiting when b's process goes (killed, crashed) fail instead of hanging.
  child.once("exit", (code, signal) => {
    for (const p of pending.values()) p.reject(new Error(`the destination process exited (${code ?? signal})`));
    pending.clear();
  });
  const address = await new Promise<string>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the destination process exited (${code}) before it was ready`)));
    child.on("message", (m: DestReady | DestReply) => {
      if ("ready" in m) return resolve(m.address);
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.ok) p?.resolve(m.value);
      else p?.reject(new Error(m.error));
    });
  });
  let nextId = 0;
  type Call = DestCall extends infer C ? (C extends { id: number } ? Omit<C, "id"> : never) : never;
  const call = (c: Call): Promise<string | undefined> =>
    new Promise((resolve, reject) => {
      if (gone()) return reject(new Error("the destination process is gone"));
      const id = ++nextId;
      pending.set(id, { resolve, reject });
      child.send({ ...c, id });
    });
  const tlsA = linkTlsOf(pki, "mover-a");
  let n = 0;
  return {
    async migrate(req) {
      if (req.destRoot !== destRoot || req.destStateDir !== destStateDir)
        throw new Error("this migrator's destination serves one root and state directory");
      const at: Partial<Record<"mirror" | "ready" | "stop" | "running", number>> = {};
      let ramBytes = 0;
      const destination: LiveDestination = {
        prepare: async (r) => {
          await call({ op: "prepare", req: r });
          at.mirror = performance.now();
        },
        finish: async (migrationId) => {
          await call({ op: "finish", migrationId });
          at.running = performance.now();
        },
        abort: async (migrationId) => void (await call({ op: "abort", migrationId })),
        problem: (migrationId) => call({ op: "problem", migrationId }),
      };
      const onReport = (r: LiveReport): void => {
        if (r.kind === "mirror-ready") at.ready = performance.now();
        if (r.kind === "switchover") at.stop = performance.now();
        if (r.kind === "completed") ramBytes = r.ramTransferredBytes;
      };
      const t0 = performance.now();
      const result = await migrateLive({
        stateDir: req.stateDir,
        name: "g",
        migrationId: `bench-live-${++n}`,
        sourceHost: "a",
        destRoot: req.destRoot,
        destination,
        link: { address, secret, tls: { tls: tlsA, destHost: "b" } },
        reportIntervalMs: 500,
        onReport,
        log: quiet,
      });
      const { mirror = t0, ready = t0, stop = t0, running = t0 } = at;
      return {
        totalMs: running - t0,
        fromMirrorMs: running - mirror,
        mirrorMs: ready - mirror,
        downtimeMs: result.downtimeMs,
        pausedMs: running - stop,
        ramTransferredBytes: ramBytes,
      };
    },
    async close() {
      if (!gone() && child.connected) await call({ op: "close" }).catch(() => undefined);
      if (!gone()) child.kill("SIGTERM");
      await exited;
    },
  };
}
