import type { KV } from "@nats-io/kv";
import { MoverRegistration } from "#schemas/index.js";
import type { Logger } from "#common/logger.js";
import type { RemoteMovers } from "#common/remote-movers.js";

const HEARTBEAT_MS = 5_000;

/** This mover's entry in the dwcp_movers bucket, kept fresh by a heartbeat, and peers' lookups. */
export class Registry {
  private timer?: NodeJS.Timeout;
  private readonly startedAt = new Date().toISOString();

  constructor(
    private readonly kv: KV,
    private readonly host: string,
    /** Canonical roots this mover is confined to. */
    readonly roots: string[],
    private readonly log: Logger,
    /** Movers of the other sites of a federation (a destination may be there); none by default. */
    private readonly remote?: Pick<RemoteMovers, "find">,
  ) {}

  async register(dataAddress: string): Promise<void> {
    const put = async (): Promise<void> => {
      const value: MoverRegistration = {
        version: 1,
        host: this.host,
        dataAddress,
        pid: process.pid,
        startedAt: this.startedAt,
        heartbeatAt: new Date().toISOString(),
      };
      await this.kv.put(this.host, JSON.stringify(value));
    };
    await put();
    this.timer = setInterval(() => {
      put().catch((err: unknown) => this.log.warn({ err }, "heartbeat not written"));
    }, HEARTBEAT_MS);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async lookup(host: string): Promise<MoverRegistration | undefined> {
    const entry = await this.kv.get(host);
    if (entry && entry.operation === "PUT" && entry.length > 0) return MoverRegistration.safeParse(entry.json()).data;
    const remote = await this.remote?.find(host);
    return remote?.found ? remote.registration : undefined;
  }
}
