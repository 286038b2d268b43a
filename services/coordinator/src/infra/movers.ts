import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { z } from "zod";
import { MoverRegistration, type MoverRequest } from "../../../../schemas/index.js";
import { DwcpError } from "../../../common/errors.js";
import { subjects } from "../../../common/layout.js";

export class UnknownHostError extends DwcpError {
  readonly code = "UNKNOWN_HOST";
  readonly retryable = false;
  constructor(readonly host: string) {
    super(`no mover has registered host "${host}"; start one with \`dwcp mover --host ${host} ...\``);
  }
}

export class HostUnreachableError extends DwcpError {
  readonly code = "HOST_UNREACHABLE";
  readonly retryable = true;
  constructor(readonly host: string, options?: { cause?: unknown }) {
    super(`mover for host "${host}" did not answer`, options);
  }
}

/** The coordinator's side of the mover control RPCs (bytes never travel here). */
export class MoverGateway {
  constructor(
    private readonly nc: NatsConnection,
    private readonly registry: KV,
  ) {}

  async registration(host: string): Promise<MoverRegistration | undefined> {
    const entry = await this.registry.get(host);
    if (!entry || entry.operation !== "PUT" || entry.length === 0) return undefined;
    const parsed = MoverRegistration.safeParse(entry.json());
    return parsed.success ? parsed.data : undefined;
  }

  /** Sends one request to whichever mover process of `host` answers first. */
  async request<S extends z.ZodType>(host: string, req: MoverRequest, reply: S, timeoutMs = 30_000): Promise<z.infer<S>> {
    if (!(await this.registration(host))) throw new UnknownHostError(host);
    let msg;
    try {
      msg = await this.nc.request(subjects.moverRpc(host), JSON.stringify(req), { timeout: timeoutMs });
    } catch (err) {
      throw new HostUnreachableError(host, { cause: err });
    }
    return reply.parse(msg.json());
  }
}
