// node ns-bridge.mjs <unix socket path> <port>, run inside a site's namespace (ns-bridge.ts):
// accepts on the socket (a file, so reachable from any network namespace) and connects each
// connection to 127.0.0.1:<port> here. Prints "listening" once it accepts.
import { connect, createServer } from "node:net";
import { rmSync } from "node:fs";

const [path, port] = process.argv.slice(2);
if (!path || !port) throw new Error("usage: ns-bridge.mjs <unix socket path> <port>");
rmSync(path, { force: true });
const server = createServer((client) => {
  const upstream = connect({ host: "127.0.0.1", port: Number(port), noDelay: true });
  const end = () => {
    client.destroy();
    upstream.destroy();
  };
  for (const s of [client, upstream]) s.on("error", end).on("close", end);
  client.pipe(upstream);
  upstream.pipe(client);
});
server.listen(path, () => process.stdout.write("listening\n"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
