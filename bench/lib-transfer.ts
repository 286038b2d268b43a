// Baselines for bench:migrate measured in the same run: a raw sendfile(2) of a file over a
// loopback socket into a file on the other side (no framing, no checksums, no events), and
// per-process CPU time and peak RSS read from /proc.
import { open, readFile } from "node:fs/promises";
import { createServer, connect, type Socket } from "node:net";
import { zeroCopy } from "../native/index.js";

/** Seconds to move `src` to `dst` with sendfile on the sending side and plain writes on the other. */
export async function rawSendfile(src: string, dst: string): Promise<number> {
  if (!zeroCopy.available) throw new Error("raw sendfile baseline needs the native module");
  const out = await open(dst, "w");
  const received = new Promise<void>((resolve, reject) => {
    const server = createServer((sock) => {
      let pos = 0;
      const writes: Array<Promise<unknown>> = [];
      sock.on("data", (chunk: Buffer) => {
        writes.push(out.write(chunk, 0, chunk.length, pos));
        pos += chunk.length;
      });
      sock.on("end", () => void Promise.all(writes).then(() => (server.close(), resolve()), reject));
    });
    server.listen(0, "127.0.0.1", () => {
      const addr = server.address();
      if (typeof addr === "object" && addr) void send(addr.port).catch(reject);
    });
  });
  const started = process.hrtime.bigint();
  async function send(port: number): Promise<void> {
    const inFh = await open(src, "r");
    const size = (await inFh.stat()).size;
    const sock: Socket = connect(port, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
    await zeroCopy.sendfile(fd, inFh.fd, 0, size);
    sock.end();
    await inFh.close();
  }
  await received;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await out.close();
  return seconds;
}

/** utime + stime of a process in seconds. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // clock ticks; 100 Hz on Linux
}

/** Peak resident set size (VmHWM) of a process in bytes. */
export async function peakRssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  return Number(kb ?? 0) * 1024;
}
