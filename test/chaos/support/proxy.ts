import type { Socket } from "node:net";
import { TcpRelay, type RelayedConnection } from "#common/relay.js";
import {
  FRAME_CODES,
  HEADER_BYTES,
  SEGMENT_ENTRY_BYTES,
  type FrameKind,
} from "../../../services/mover/src/domain/data-channel/frames.js";
import { FrameWalker } from "../../support/dwcp-frames.js";
import type { Rng } from "./seed.js";

/** What the proxy does to traffic right now; change it at any time, it applies to new bytes. */
export interface Faults {
  /** Added to every byte in each direction (one way), in ms. */
  latencyMs: number;
  /** Cap per connection and direction, bytes/s; undefined = none. */
  rateBytesPerSec?: number;
  /** Per DWCP CHUNK frame (client → server) carrying data: chance of one flipped bit in its data. */
  flipProbability: number;
  /** The next this-many CHUNK frames with data get a flipped bit for sure (then flipProbability). */
  flipNext: number;
  /**
   * Hold every byte instead of forwarding it (a silent partition: connections stay open, nothing
   * arrives, TCP on both ends just waits); heal() delivers what was held.
   */
  blackhole: boolean;
}

/** A DWCP data-channel frame as the sniffer saw it pass. */
export interface FrameSeen {
  conn: number;
  dir: "up" | "down";
  kind: FrameKind | "UNKNOWN";
  at: number;
  /** CHUNK: offset; CHUNK_OK/CHUNK_ERR: offset. */
  offset: number;
  /** Header + payload bytes. */
  wire: number;
  /** Migration, batch and attempt of the connection's current BATCH_BEGIN ("" / -1 before one). */
  migration: string;
  batch: number;
  attempt: number;
  /** BATCH_BEGIN's delivery, if sent. */
  delivery?: number;
  /** BATCH_ERR / CHUNK_ERR failure code. */
  code?: string;
  /** CHUNK: a bit of this frame was flipped. */
  flipped?: boolean;
  /** TUNNEL_OPEN: the channel asked for (e.g. "nbd", "migration"). */
  channel?: string;
}

type Listener = (f: FrameSeen) => void;

/**
 * A TCP proxy that injects faults: latency, a bandwidth cap, cuts (existing connections reset,
 * new ones refused until heal) and, for the dwcp data channel, bit flips in chunk data. With
 * `sniff` it parses DWCP frames in both directions and reports them, so a test can wait for
 * "chunk 3 of batch 2 is on the wire" instead of sleeping. The relaying itself (accept, dial,
 * cut, suspend) is the product's TcpRelay; this adds the per-direction lanes and the sniffer.
 */
export class FaultProxy {
  readonly faults: Faults = { latencyMs: 0, flipProbability: 0, flipNext: 0, blackhole: false };
  readonly frames: FrameSeen[] = [];
  /** CHUNK frames whose data got a flipped bit (also reported once as a CHUNK frame). */
  readonly flips: FrameSeen[] = [];
  bytesUp = 0;
  private readonly lanes = new Set<Lane>();
  private readonly listeners = new Set<Listener>();
  private relay!: TcpRelay;

  private constructor(private readonly opts: ProxyOptions) {}

  static async start(opts: ProxyOptions): Promise<FaultProxy> {
    const proxy = new FaultProxy(opts);
    proxy.relay = await TcpRelay.start({
      target: { host: opts.targetHost, port: opts.targetPort },
      listenHost: opts.listenHost,
      listenPort: opts.listenPort ?? 0,
      reset: true,
      forward: (c) => proxy.forward(c),
    });
    return proxy;
  }

  get port(): number {
    return this.relay.port;
  }

  get host(): string {
    return this.relay.host;
  }

  get address(): string {
    return this.relay.address;
  }

  get connections(): number {
    return this.relay.connections;
  }

  /** Reset every connection and refuse new ones until heal(). */
  cut(): void {
    this.relay.cut();
  }

  /** Ends a cut or a blackhole; held bytes are delivered. */
  heal(): void {
    this.relay.heal();
    this.faults.blackhole = false;
    for (const lane of this.lanes) lane.pump();
  }

  /** Resets every fault to "none" (connections stay). */
  reset(): void {
    Object.assign(this.faults, { latencyMs: 0, rateBytesPerSec: undefined, flipProbability: 0, flipNext: 0 });
    this.heal();
  }

  get isCut(): boolean {
    return this.relay.isCut;
  }

  /**
   * Stops listening, so that connecting is refused (ECONNREFUSED) as at the port of a process
   * that was killed, and drops open connections. An accepted connection closed at once is not
   * the same to a NATS route: every reconnect attempt "creates" a route that fails.
   * resume() listens on the same port again.
   */
  async suspend(): Promise<void> {
    await this.relay.suspend();
  }

  async resume(): Promise<void> {
    await this.relay.resume();
  }

  onFrame(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Resolves with the first frame (already seen or future) that matches. */
  async waitFrame(what: string, match: (f: FrameSeen) => boolean, timeoutMs = 60_000): Promise<FrameSeen> {
    const seen = this.frames.find(match);
    if (seen) return seen;
    return new Promise<FrameSeen>((resolve, reject) => {
      const timer = setTimeout(
        () => (off(), reject(new Error(`proxy ${this.opts.name}: no ${what} within ${timeoutMs} ms`))),
        timeoutMs,
      );
      const off = this.onFrame((f) => {
        if (!match(f)) return;
        clearTimeout(timer);
        off();
        resolve(f);
      });
    });
  }

  async close(): Promise<void> {
    await this.relay.close();
  }

  private emit(f: FrameSeen): void {
    this.frames.push(f);
    for (const l of [...this.listeners]) l(f);
  }

  private forward({ id, client, upstream }: RelayedConnection): void {
    const state = { migration: "", batch: -1, attempt: -1 };
    const up = this.opts.sniff ? new Sniffer("up", id, state, this, this.opts.rng) : undefined;
    const down = this.opts.sniff ? new Sniffer("down", id, state, this, undefined) : undefined;
    const lanes = [new Lane(client, upstream, this, up), new Lane(upstream, client, this, down)];
    for (const lane of lanes) {
      this.lanes.add(lane);
      lane.start();
    }
    client.once("close", () => lanes.forEach((l) => this.lanes.delete(l)));
  }

  /** @internal */ report(f: FrameSeen): void {
    this.emit(f);
  }

  /** @internal */ countUp(n: number): void {
    this.bytesUp += n;
  }
}

export interface ProxyOptions {
  name: string;
  listenHost: string;
  listenPort?: number;
  targetHost: string;
  targetPort: number;
  /** Parse DWCP data-channel frames (and allow bit flips). */
  sniff?: boolean;
  /** Decides which chunks get a flipped bit, and which bit. */
  rng?: Rng;
}

/** One direction of one connection: delay, rate-limit, sniff, forward; back-pressure both ways. */
class Lane {
  private readonly queue: Array<{ buf: Buffer; at: number }> = [];
  private queued = 0;
  private nextFree = 0;
  private timer: NodeJS.Timeout | undefined;
  private ended = false;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
    private readonly proxy: FaultProxy,
    private readonly sniffer: Sniffer | undefined,
  ) {}

  start(): void {
    this.src.on("data", (chunk: Buffer) => {
      const buf = this.sniffer ? this.sniffer.pass(chunk) : chunk;
      if (this.sniffer?.dir === "up") this.proxy.countUp(buf.length);
      const f = this.proxy.faults;
      const now = performance.now();
      let at = now + f.latencyMs;
      if (f.rateBytesPerSec !== undefined) {
        at = Math.max(at, this.nextFree);
        this.nextFree = Math.max(this.nextFree, now) + (buf.length * 1000) / f.rateBytesPerSec;
      }
      this.queue.push({ buf, at });
      this.queued += buf.length;
      if (this.queued > 1024 * 1024) this.src.pause();
      this.pump();
    });
    this.src.on("end", () => {
      this.ended = true;
      this.pump();
    });
    this.dst.on("drain", () => this.pump());
  }

  pump(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.proxy.faults.blackhole) return; // heal() pumps again
    const now = performance.now();
    while (this.queue.length > 0) {
      const head = this.queue[0];
      if (head === undefined || head.at > now) break;
      this.queue.shift();
      this.queued -= head.buf.length;
      if (this.dst.destroyed) return;
      if (!this.dst.write(head.buf)) return; // resumes on drain
    }
    if (this.queued < 256 * 1024 && this.src.isPaused() && !this.src.destroyed) this.src.resume();
    const head = this.queue[0];
    if (head) this.timer = setTimeout(() => this.pump(), Math.max(1, head.at - now));
    else if (this.ended && !this.dst.destroyed) this.dst.end();
  }
}

/** Streaming DWCP frame parser for one direction; flips bits in CHUNK data when told to. */
class Sniffer extends FrameWalker {
  private control: Buffer[] = [];
  private current:
    | { kind: FrameKind | "UNKNOWN"; offset: number; wire: number; flipAt: number; flipped: boolean }
    | undefined;

  constructor(
    readonly dir: "up" | "down",
    private readonly conn: number,
    private readonly state: { migration: string; batch: number; attempt: number },
    private readonly proxy: FaultProxy,
    private readonly rng: Rng | undefined,
  ) {
    super();
  }

  pass(chunk: Buffer): Buffer {
    return this.walk(chunk);
  }

  protected onHeader(h: Buffer): void {
    const code = h.readUInt8(5);
    const kind = (Object.entries(FRAME_CODES).find(([, c]) => c === code)?.[0] ?? "UNKNOWN") as FrameKind | "UNKNOWN";
    const payload = h.readUInt32BE(8);
    const offset = h.readUInt32BE(12) * 2 ** 32 + h.readUInt32BE(16);
    const table = h.readUInt32BE(28) * SEGMENT_ENTRY_BYTES;
    let flipAt = -1;
    const f = this.proxy.faults;
    if (kind === "CHUNK" && this.rng && payload > table && (f.flipNext > 0 || this.rng.float() < f.flipProbability)) {
      f.flipNext = Math.max(0, f.flipNext - 1);
      flipAt = table + this.rng.int(payload - table);
    }
    this.current = { kind, offset, wire: HEADER_BYTES + payload, flipAt, flipped: false };
    this.control = [];
    // CHUNK frames are reported when their header passes: "chunk k is being written now".
    if (kind === "CHUNK") this.report(undefined);
  }

  protected onPayload(chunk: Buffer, from: number, n: number, at: number): void {
    const c = this.current;
    if (c === undefined) return;
    if (c.flipAt >= at && c.flipAt < at + n && this.rng) {
      const i = from + (c.flipAt - at);
      chunk[i] = (chunk[i] ?? 0) ^ (1 << this.rng.int(8));
      c.flipped = true;
    }
    if (c.kind !== "CHUNK") this.control.push(Buffer.from(chunk.subarray(from, from + n)));
  }

  protected override onEnd(): void {
    this.finish();
  }

  private finish(): void {
    const c = this.current;
    this.current = undefined;
    if (c === undefined) return;
    if (c.kind === "CHUNK") {
      if (c.flipped) this.proxy.flips.push({ ...this.base(c), flipped: true });
      return;
    }
    let json: {
      migrationId?: string;
      batch?: number;
      attempt?: number;
      delivery?: number;
      code?: string;
      channel?: string;
    } = {};
    if (c.kind === "BATCH_BEGIN" || c.kind === "BATCH_ERR" || c.kind === "CHUNK_ERR" || c.kind === "TUNNEL_OPEN") {
      try {
        json = JSON.parse(Buffer.concat(this.control).toString("utf8")) as typeof json;
      } catch {
        json = {};
      }
    }
    if (c.kind === "BATCH_BEGIN") {
      this.state.migration = json.migrationId ?? "";
      this.state.batch = json.batch ?? -1;
      this.state.attempt = json.attempt ?? -1;
    }
    this.current = c;
    this.report(json);
    this.current = undefined;
    // A tunnel's raw stream follows TUNNEL_OPEN (the sender writes nothing until TUNNEL_OK) and
    // TUNNEL_OK: it is not walked as frames.
    if ((c.kind === "TUNNEL_OPEN" && this.dir === "up") || (c.kind === "TUNNEL_OK" && this.dir === "down"))
      this.stopWalking();
  }

  private base(c: NonNullable<Sniffer["current"]>): FrameSeen {
    return {
      conn: this.conn,
      dir: this.dir,
      kind: c.kind,
      at: performance.now(),
      offset: c.offset,
      wire: c.wire,
      migration: this.state.migration,
      batch: this.state.batch,
      attempt: this.state.attempt,
    };
  }

  private report(json: { delivery?: number; code?: string; channel?: string } | undefined): void {
    const c = this.current;
    if (c === undefined) return;
    const f = this.base(c);
    if (json?.delivery !== undefined) f.delivery = json.delivery;
    if (json?.code !== undefined) f.code = json.code;
    if (json?.channel !== undefined) f.channel = json.channel;
    this.proxy.report(f);
  }
}
