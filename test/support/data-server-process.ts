// A TLS data server in a process of its own, for tests whose senders must not share a libuv pool
// with the destination (a mover runs each in its own process): `node --import tsx
// data-server-process.ts <json>` with {caFile, certFile, keyFile, host, root, secretHex}; prints
// {"address": ...} once listening, and closes on SIGTERM.
import { loadLinkSecurity } from "../../services/common/secure-link/tls.js";
import { startDataServer } from "../../services/mover/src/infra/data-channel/server.js";
import { silentLog } from "./data-channel.js";

const o = JSON.parse(process.argv[2] ?? "{}") as {
  caFile: string;
  certFile: string;
  keyFile: string;
  host: string;
  root: string;
  secretHex: string;
};
const link = loadLinkSecurity({ mode: "tls", caFile: o.caFile, certFile: o.certFile, keyFile: o.keyFile });
const server = await startDataServer({
  host: o.host,
  listenHost: "127.0.0.1",
  listenPort: 0,
  secret: Buffer.from(o.secretHex, "hex"),
  roots: [o.root],
  log: silentLog,
  tls: link?.mode === "tls" ? link.tls : undefined,
});
process.stdout.write(`${JSON.stringify({ address: server.address })}\n`);
process.once("SIGTERM", () => void server.close().then(() => process.exit(0)));
