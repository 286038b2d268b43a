// A plain single-stream TCP copy, the baseline the WAN tests and bench compare against.
//   node tcp-copy.mjs recv HOST PORT OUT|-      accept one connection, write it to OUT (- discards),
//                                               fsync, print {"bytes","seconds","steadyMbit"} and exit
//   node tcp-copy.mjs send HOST PORT FILE       stream FILE, then close
//   node tcp-copy.mjs send HOST PORT --seconds N  stream random bytes for N seconds
// "listening" is printed on stdout once the receiver accepts. `seconds` runs from the first byte
// to the last; `steadyMbit` is the rate over the last two thirds of that (after slow start).
import { createReadStream, openSync, writeSync, fsyncSync, closeSync } from "node:fs";
import { randomFillSync } from "node:crypto";
import { createConnection, createServer } from "node:net";

const [mode, host, portText, target, extra] = process.argv.slice(2);
const port = Number(portText);

if (mode === "recv") {
  const fd = target === "-" ? undefined : openSync(target, "w");
  const server = createServer((sock) => {
    server.close();
    let bytes = 0;
    let first = 0n;
    const samples = [];
    sock.on("data", (buf) => {
      const now = process.hrtime.bigint();
      if (bytes === 0) first = now;
      bytes += buf.length;
      if (fd !== undefined) writeSync(fd, buf);
      const last = samples.at(-1);
      if (!last || now - last[0] > 50_000_000n) samples.push([now, bytes]);
    });
    sock.on("end", () => {
      const end = process.hrtime.bigint();
      if (fd !== undefined) {
        fsyncSync(fd);
        closeSync(fd);
      }
      const seconds = Number(end - first) / 1e9;
      const from = samples.find(([t]) => Number(t - first) / 1e9 >= seconds / 3) ?? [first, 0];
      const steadyMbit = ((bytes - from[1]) * 8) / 1e6 / (Number(end - from[0]) / 1e9);
      process.stdout.write(`${JSON.stringify({ bytes, seconds, steadyMbit })}\n`);
    });
  });
  server.listen(port, host, () => process.stdout.write("listening\n"));
} else if (mode === "send") {
  const sock = createConnection({ host, port });
  sock.on("error", (err) => {
    process.stderr.write(`tcp-copy: ${err.message}\n`);
    process.exit(1);
  });
  if (target === "--seconds") {
    const until = Date.now() + Number(extra) * 1000;
    const buf = randomFillSync(Buffer.alloc(1 << 20));
    const pump = () => {
      while (Date.now() < until) if (!sock.write(buf)) return void sock.once("drain", pump);
      sock.end();
    };
    sock.once("connect", pump);
  } else createReadStream(target, { highWaterMark: 1 << 20 }).pipe(sock);
} else {
  process.stderr.write("usage: tcp-copy.mjs recv HOST PORT OUT|- | send HOST PORT FILE|--seconds N\n");
  process.exit(2);
}
