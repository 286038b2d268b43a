// Host b of the live bench as its own process, as a destination mover is: b's data server (mutual
// TLS) and an IncomingVms, driven over the IPC channel by the source side (live-dwcp.ts). argv:
// a JSON object {caFile, certFile, keyFile, secretHex, destRoot, destStateDir, listenHost?}.
import pino from "pino";
import { loadLinkSecurity } from "#common/secure-link/tls.js";
import type { Logger } from "#common/logger.js";
import { startDataServer } from "../../services/mover/src/infra/data-channel/server.js";
import { IncomingVms, type IncomingRequest } from "../../services/mover/src/infra/vm/live-incoming.js";

export interface DestArgs {
  caFile: string;
  certFile: string;
  keyFile: string;
  secretHex: string;
  destRoot: string;
  destStateDir: string;
  /** Where b's data server listens. Default 127.0.0.1. */
  listenHost?: string;
}

export type DestCall =
  | { id: number; op: "prepare"; req: IncomingRequest }
  | { id: number; op: "finish" | "abort" | "problem"; migrationId: string }
  | { id: number; op: "close" };
export type DestReply = { id: number; ok: true; value?: string } | { id: number; ok: false; error: string };
export type DestReady = { ready: true; address: string };

const args = JSON.parse(process.argv[2] ?? "{}") as DestArgs;
const log = pino({ level: process.env["DWCP_BENCH_LOG"] ?? "silent" }) as unknown as Logger;
const link = loadLinkSecurity({ mode: "tls", caFile: args.caFile, certFile: args.certFile, keyFile: args.keyFile });
if (link?.mode !== "tls") throw new Error("the destination's link security is not TLS");
const server = await startDataServer({
  host: "b",
  listenHost: args.listenHost ?? "127.0.0.1",
  listenPort: 0,
  secret: Buffer.from(args.secretHex, "hex"),
  roots: [args.destRoot],
  log,
  tls: link.tls,
});
const incoming = new IncomingVms(args.destStateDir, server.tunnels, log);

const handle = async (m: DestCall): Promise<string | undefined> => {
  switch (m.op) {
    case "prepare":
      return void (await incoming.prepare(m.req));
    case "finish":
      return void (await incoming.finish(m.migrationId));
    case "abort":
      return void (await incoming.abort(m.migrationId));
    case "problem":
      return incoming.problem(m.migrationId);
    case "close":
      await server.close();
      setImmediate(() => process.exit(0));
      return undefined;
  }
};
process.on("message", (m: DestCall) => {
  handle(m).then(
    (value) => process.send?.({ id: m.id, ok: true, ...(value === undefined ? {} : { value }) } satisfies DestReply),
    (err: unknown) => process.send?.({ id: m.id, ok: false, error: (err as Error).message } satisfies DestReply),
  );
});
// The bench went away (killed): nothing is left behind by this process's own doing.
process.on("disconnect", () => void server.close().finally(() => process.exit(0)));
process.send?.({ ready: true, address: server.address } satisfies DestReady);
