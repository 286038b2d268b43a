import { createServer, connect, type Server, type Socket } from "node:net";

/**
 * A TCP relay on one leafnode link (site -> hub) that a test or an operator drill can cut: cutting
 * destroys every relayed connection and refuses new ones (accepted and closed at once, so the
 * listening port stays ours); healing lets the site's reconnect attempts through again.
 */
export class LinkProxy {
  private readonly sockets = new Set<Socket>();
  private cutOff = false;
  private refusals = 0;
  private readonly onRefusal = new Set<() => void>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {
    server.on("connection", (client) => this.relay(client));
  }

  static async start(target: { host: string; port: number }): Promise<LinkProxy> {
    const server = createServer();
    const port = await new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const addr = server.address();
        resolve(typeof addr === "object" && addr ? addr.port : 0);
      });
    });
    return new LinkProxy(server, port, target);
  }

  get isCut(): boolean {
    return this.cutOff;
  }

  cut(): void {
    this.cutOff = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
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

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private relay(client: Socket): void {
    if (this.cutOff) {
      client.destroy();
      this.refusals++;
      for (const l of [...this.onRefusal]) l();
      return;
    }
    const upstream = connect(this.target.port, this.target.host);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on("error", () => undefined);
      s.on("close", () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
