import { DEFAULT_CHUNK_BYTES } from "#schemas/common.js";
import { type FinalizeReply, MoverRequest } from "#schemas/index.js";
import type { ConsumerMessages } from "@nats-io/jetstream";
import type { Subscription } from "@nats-io/transport-node";
import { EventStore } from "#common/event-store.js";
import { processEventTrust } from "#common/signing.js";
import { checkLayout, MOVER_DURABLE, openLayout, subjects, workStream } from "#common/layout.js";
import { safeJson } from "#common/json.js";
import type { Lifecycle } from "#common/lifecycle.js";
import type { Logger } from "#common/logger.js";
import type { Nats } from "#common/nats.js";
import { PLAINTEXT_WARNING } from "#common/secure-link/tls.js";
import type { MoverConfig } from "../config.js";
import { chunkBuffers } from "../infra/data-channel/buffer-pool.js";
import { closeIdleLinks, SEND_BUFFERS } from "../infra/data-channel/client.js";
import { BUFFERS_PER_CONNECTION, startDataServer, type DataServer } from "../infra/data-channel/server.js";
import { VERIFY_READS_IN_FLIGHT } from "../infra/volume-crc.js";
import { RemoteMovers } from "#common/remote-movers.js";
import { Registry } from "../infra/registry.js";
import { abortVolumes, finalizeVolumes, probeDestination, probeSource } from "../infra/volumes.js";
import { confine, makeDirConfined, releaseRoots, resolveRoots } from "../infra/volume-paths.js";
import { IncomingVms } from "../infra/vm/live-incoming.js";
import { serveLive } from "./live-rpc.js";
import { Finalizes } from "./finalizes.js";
import { LargeSlots } from "./slots.js";
import { BatchWorker } from "./work.js";

/** A batch of at most this many bytes is small (see workLoop). */
const SMALL_BATCH_BYTES = 1024 * 1024;
/**
 * Small batches in flight per slot of `concurrency`: with the default concurrency of 2, as many
 * as the data links a mover keeps per destination (MAX_IDLE_LINKS), so they run on kept links.
 */
const SMALL_BATCH_FACTOR = 8;

/** Whether a work item moves at most SMALL_BATCH_BYTES (what it names, before validation: junk counts as small). */
function isSmallItem(data: Uint8Array): boolean {
  const w = safeJson(data) as
    | { chunkCount?: unknown; chunkSizeBytes?: unknown; firstChunk?: unknown; volume?: { sizeBytes?: unknown } }
    | undefined;
  const { chunkCount, chunkSizeBytes, firstChunk } = w ?? {};
  const size = w?.volume?.sizeBytes;
  if (typeof chunkCount !== "number" || typeof chunkSizeBytes !== "number") return true;
  if (typeof firstChunk !== "number" || typeof size !== "number") return true;
  return Math.min(chunkCount * chunkSizeBytes, size - firstChunk * chunkSizeBytes) <= SMALL_BATCH_BYTES;
}

/**
 * One mover per host: serves the data channel (as a destination), answers control requests for
 * its roots, and pulls batches from its host's work queue (as a source), `concurrency` at a time.
 */
export class Mover {
  state: Lifecycle = "starting";
  private registry?: Registry;
  private dataServer?: DataServer;
  private rpc?: Subscription;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly finalizes = new Finalizes<FinalizeReply>();
  private loop?: Promise<void>;
  private worker?: BatchWorker;
  private liveRpc?: Subscription;
  private incoming?: IncomingVms;

  constructor(
    private readonly nats: Nats,
    private readonly config: MoverConfig,
    private readonly log: Logger,
  ) {}

  get dataAddress(): string | undefined {
    return this.dataServer?.address;
  }

  async start(): Promise<void> {
    const { config, nats, log } = this;
    // Secure by default: no signing key and trust file, no start (unless DWCP_EVENTS_UNSIGNED=on).
    const trust = processEventTrust({ warn: (msg) => log.warn(msg) });
    const roots = await resolveRoots(config.roots);
    // Pre-fault the chunk buffers a busy mover uses (per batch its receiving and sending ones,
    // and a verify pass's) before it takes work, instead of in its first batches.
    chunkBuffers.prefill(
      DEFAULT_CHUNK_BYTES,
      (BUFFERS_PER_CONNECTION + SEND_BUFFERS) * config.concurrency + VERIFY_READS_IN_FLIGHT,
    );
    // Admin provisions the streams (a mover's user may not create them): check only.
    const kv = await openLayout(nats.nc, nats.jsm);
    await checkLayout(nats.jsm, [workStream(config.host)]);
    if (config.link.mode === "plaintext") log.warn({ host: config.host }, PLAINTEXT_WARNING);
    const dataServer = await startDataServer({
      host: config.host,
      listenHost: config.listenHost,
      listenPort: config.listenPort,
      secret: Buffer.from(config.secret),
      ...(config.link.mode === "tls" ? { tls: config.link.tls } : {}),
      roots,
      log,
      nativeRecv: config.nativeRecv,
    });
    this.dataServer = dataServer;
    if (config.vmStateDir !== undefined) {
      // Before the host is registered: nothing an earlier mover left waits for a stream that cannot come.
      this.incoming = new IncomingVms(config.vmStateDir, dataServer.tunnels, log);
      await this.incoming.sweep();
    }
    const port = dataServer.address.slice(dataServer.address.lastIndexOf(":") + 1);
    const advertised = `${config.advertiseHost}:${port}`;
    this.registry = new Registry(kv, config.host, roots, log, new RemoteMovers(nats.nc), {
      heartbeatMs: config.leaseHeartbeatMs,
      ttlMs: config.leaseTtlMs,
    });
    // A mover refused its host id answers no request (checked before it subscribes; the claim
    // below decides between racing claimants). Subscribed before the claim makes it visible.
    if (!config.standby) await this.registry.refuseIfHeld();
    this.rpc = this.serveRpc(roots);
    await this.registry.register(advertised, { standby: config.standby });
    const store = new EventStore(nats.js, nats.jsm, { trust });
    if (this.incoming !== undefined) this.liveRpc = this.serveLive(this.incoming, store, roots);
    const worker = (this.worker = new BatchWorker(nats, store, this.registry, config, log, {
      address: advertised,
      copy: (o) => dataServer.copyLocal(o),
    }));
    this.state = "running";
    this.loop = this.workLoop(worker);
    const standby = !this.registry.holding;
    log.info({ host: config.host, dataAddress: advertised, roots, standby }, "mover running");
  }

  /**
   * Calls `onEnd` if the work loop ends while the mover is running: it no longer takes work, and
   * its supervisor should restart it.
   */
  onLoopEnded(onEnd: (reason: string, err?: unknown) => void): void {
    void this.loop?.then(
      () => this.state === "running" && onEnd("the work loop ended"),
      (err: unknown) => this.state === "running" && onEnd("the work loop failed", err),
    );
  }

  async stop(): Promise<void> {
    if (this.state === "stopped") return;
    this.state = "draining";
    this.rpc?.unsubscribe();
    this.liveRpc?.unsubscribe();
    await this.loop;
    await Promise.allSettled([...this.inFlight]);
    this.worker?.close();
    // A guest not yet running here has no future without this mover: its source rolls back.
    await this.incoming?.abortAll();
    closeIdleLinks();
    await this.registry?.stop();
    await this.dataServer?.close();
    if (this.registry !== undefined) releaseRoots(this.registry.roots);
    this.state = "stopped";
  }

  /**
   * Pulls work in batches: up to `concurrency` large batches sending at once (LargeSlots: a batch
   * that has sent its last chunk waits for its acknowledgements beside the next one), and up to
   * SMALL_BATCH_FACTOR times as many small ones (a small batch holds little memory and is mostly
   * round trips: a thousand small migrations would otherwise queue behind two slots). After a
   * large item it pulls only what the large slots can take, so no pulled item waits out its ack
   * wait behind others.
   */
  private async workLoop(worker: BatchWorker): Promise<void> {
    const consumer = await this.nats.js.consumers.get(workStream(this.config.host), MOVER_DURABLE);
    const { concurrency } = this.config;
    const large = new LargeSlots(concurrency);
    let largeMode = true;
    while (this.state === "running") {
      const room: number = largeMode ? large.room : concurrency * SMALL_BATCH_FACTOR - this.inFlight.size;
      if (room <= 0) {
        await (largeMode ? large.changed() : Promise.race(this.inFlight));
        continue;
      }
      const batch: ConsumerMessages | null = await consumer
        .fetch({ max_messages: room, expires: 1_000 })
        .catch((err: unknown) => {
          this.log.warn({ err }, "could not pull work");
          return new Promise<null>((r) => setTimeout(() => r(null), 1_000));
        });
      if (!batch) continue;
      try {
        for await (const m of batch) {
          const isLarge: boolean = !isSmallItem(m.data);
          largeMode = isLarge;
          while (isLarge && large.room <= 0) {
            m.working();
            await large.changed();
          }
          const handle = (sent?: () => void): Promise<void> =>
            worker.handle(m, sent).catch((err: unknown) => {
              this.log.error({ err }, "work item handler crashed; it will be redelivered");
              m.nak(5_000);
            });
          const task: Promise<void> = (isLarge ? large.run(handle) : handle()).finally(() =>
            this.inFlight.delete(task),
          );
          this.inFlight.add(task);
        }
      } catch (err) {
        // A pull that ends in an error (missed heartbeats through a leader change, a lost
        // connection) loses nothing: what it did not deliver stays in the queue. Pull again.
        this.log.warn({ err }, "work pull ended early");
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }
  }

  /**
   * The destination side of live migrations: its source mover asks over NATS to prepare a paused
   * QEMU here (recorded under the VM state dir), whose NBD export and migration socket the source
   * reaches through tunnels over the data channel, then to run it or to clean it away.
   */
  private serveLive(incoming: IncomingVms, store: EventStore, roots: string[]): Subscription {
    return serveLive(this.nats.nc, {
      host: this.config.host,
      destination: incoming,
      trust: store.trust,
      // Only the coordinator's record of the migration says what the source may ask for.
      requested: async (id) => {
        for (const e of await store.read(id)) {
          const p = e.provenance;
          const byCoordinator = p?.kind === "insecure" || (p?.kind === "signed" && p.principal.role === "coordinator");
          if (e.event.type === "MigrationRequested" && byCoordinator) return e.event;
        }
        return undefined;
      },
      resolveDir: async (dir) => {
        const path = await confine(roots, dir, { mustExist: false });
        (await makeDirConfined(roots, path)).dir.close();
        return path;
      },
      log: this.log,
    });
  }

  private serveRpc(roots: string[]): Subscription {
    return this.nats.nc.subscribe(subjects.moverRpc(this.config.host), {
      queue: "movers",
      callback: (_err, msg) => {
        void (async () => {
          const parsed = MoverRequest.safeParse(safeJson(msg.data));
          if (!parsed.success) {
            msg.respond(JSON.stringify({ ok: false, reason: "PROTOCOL_ERROR", message: parsed.error.message }));
            return;
          }
          const req = parsed.data;
          const log = this.log.child({ migrationId: req.migrationId, op: req.op });
          try {
            const reply = await this.answer(req, roots, log);
            if (!reply.ok && reply.reason !== undefined) log.warn({ reason: reply.reason }, reply.message);
            msg.respond(JSON.stringify(reply));
          } catch (err) {
            log.error({ err }, "control request failed");
            msg.respond(JSON.stringify({ ok: false, reason: "INTERNAL", message: (err as Error).message }));
          }
        })();
      },
    });
  }

  private async answer(
    req: MoverRequest,
    roots: string[],
    log: Logger,
  ): Promise<{ ok: boolean; reason?: string; message?: string; pending?: true }> {
    switch (req.op) {
      case "probeSource":
        return probeSource(req, roots);
      case "probeDestination":
        return probeDestination(req, roots);
      case "finalize": {
        const reply = await this.finalizes.answer(`${req.migrationId}\0${req.destDir}`, req.holdMs, () =>
          finalizeVolumes(req, roots, log),
        );
        return reply === "pending" ? { ok: false, pending: true } : reply;
      }
      case "abort":
        return abortVolumes(req, roots);
      default: {
        const never: never = req;
        return never;
      }
    }
  }
}
