import { connect, createServer, type Server, type Socket } from "node:net";
import { DwcpError } from "./errors.js";

/** The relay's listening socket has no TCP address (it was closed while starting). */
export class RelayBindError extends DwcpError {
  readonly code = "RELAY_BIND_FAILED" as const;
  readonly retryable = false;
}

/** One relayed connection: the accepted client and its upstream socket to the target. */
export interface RelayedConnection {
  /** 1, 2, ... in order of acceptance. */
  id: number;
  client: Socket;
  upstream: Socket;
}

export interface RelayOptions {
  target: { host: string; port: number };
  /** Default 127.0.0.1. */
  listenHost?: string;
  /** Default 0 (a free port). */
  listenPort?: number;
  /**
   * How bytes flow once the upstream socket is connected; the client is resumed after it
   * returns. Default: pipe both ways. A fault injector delays, throttles or rewrites here.
   */
  forward?: (c: RelayedConnection) => void;
  /** cut() and refusals reset connections (RST) instead of closing them. Default false. */
  reset?: boolean;
}

/**
 * A TCP relay in front of one target that can be cut: cut() drops every relayed connection and
 * refuses new ones (accepted and closed at once, so the listening port stays ours) until heal();
 * suspend() stops listening altogether (connecting is refused as at a dead process's port) until
 * resume(). Federation routes its leafnode links through one so an operator drill can partition
 * a site; the tests build their fault proxies on it.
 */
export class TcpRelay {
  connections = 0;
  private readonly open = new Set<Socket>();
  private cutOff = false;
  private refusals = 0;
  private readonly onRefusal = new Set<() => void>();

  private constructor(
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
    private readonly opts: RelayOptions,
  ) {
    server.on("connection", (client: Socket) => this.accept(client));
  }

  static async start(opts: RelayOptions): Promise<TcpRelay> {
    const host = opts.listenHost ?? "127.0.0.1";
    const server = createServer({ pauseOnConnect: true, allowHalfOpen: true });
    await listenOn(server, host, opts.listenPort ?? 0);
    const addr = server.address();
    if (addr === null || typeof addr === "string") throw new RelayBindError(`relay on ${host} has no TCP address`);
    return new TcpRelay(server, host, addr.port, opts);
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  get isCut(): boolean {
    return this.cutOff;
  }

  /** Drop every relayed connection and refuse new ones until heal(). */
  cut(): void {
    this.cutOff = true;
    this.dropAll();
  }

  heal(): void {
    this.cutOff = false;
  }

  /** Connection attempts refused since start (each is the far side trying to reconnect). */
  get refused(): number {
    return this.refusals;
  }

  /** Resolves once `count` attempts have been refused in total. */
  async whenRefused(count: number): Promise<void> {
    if (this.refusals >= count) return;
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (this.refusals < count) return;
        this.onRefusal.delete(check);
        resolve();
      };
      this.onRefusal.add(check);
    });
  }

  /** Stop listening (connecting is refused) and drop open connections; resume() listens again. */
  async suspend(): Promise<void> {
    if (!this.server.listening) return;
    for (const s of this.open) s.destroy();
    this.open.clear();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Listen on the same port again after suspend(). */
  async resume(): Promise<void> {
    if (this.server.listening) return;
    await listenOn(this.server, this.host, this.port);
  }

  async close(): Promise<void> {
    this.cut();
    if (this.server.listening) await new Promise<void>((r) => this.server.close(() => r()));
  }

  private dropAll(): void {
    for (const s of this.open) {
      if (this.opts.reset === true) s.resetAndDestroy();
      else s.destroy();
    }
    this.open.clear();
  }

  private accept(client: Socket): void {
    if (this.cutOff) {
      if (this.opts.reset === true) client.resetAndDestroy();
      else client.destroy();
      this.refusals++;
      for (const l of [...this.onRefusal]) l();
      return;
    }
    const id = ++this.connections;
    const upstream = connect({
      host: this.opts.target.host,
      port: this.opts.target.port,
      noDelay: true,
      allowHalfOpen: true,
    });
    client.setNoDelay(true);
    this.open.add(client).add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
    };
    // Half-closes pass through (both sockets allow half-open; the forward ends each direction
    // once it has delivered what it holds): a side that closed cleanly has passed its end on and
    // the other closes by itself once its last bytes are written. Tearing both down at the first
    // close cut off a stream ending in a half-close (a live migration's tunnel) while a delaying
    // forward still held its tail. A side that failed takes the other with it.
    for (const s of [client, upstream]) {
      s.on("error", drop);
      s.once("close", (hadError) => {
        this.open.delete(s);
        if (hadError) drop();
      });
    }
    upstream.once("connect", () => {
      const forward = this.opts.forward ?? pipeBoth;
      forward({ id, client, upstream });
      client.resume();
    });
  }
}

function pipeBoth(c: RelayedConnection): void {
  c.client.pipe(c.upstream);
  c.upstream.pipe(c.client);
}

async function listenOn(server: Server, host: string, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port, exclusive: true }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}
