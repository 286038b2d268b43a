// Baselines for bench:migrate measured in the same run: a raw sendfile(2) of a file over a
// loopback socket into a file on the other side (no framing, no checksums, no events), and
// per-process CPU time and peak RSS read from /proc.
import { closeSync, openSync, writeSync } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { createServer, connect, type AddressInfo } from "node:net";
import { socketFd, zeroCopy } from "#native/index.js";

/**
 * Seconds to move `src` to `dst` over loopback: sendfile(2) from the file into the socket on one
 * side; on the other, Node reading the socket into one reused, pre-faulted 4 MiB buffer (the
 * `onread` option) and writing each read at once with pwrite. No framing, checksums or events;
 * the file is closed without fsync, as `cp` would leave it. The fastest plain transfer we could
 * write with Node, so dwcp is compared with the kernel's own copy path rather than a slow script.
 */
export async function rawSendfile(src: string, dst: string): Promise<number> {
  if (!zeroCopy.available) throw new Error("raw sendfile baseline needs the native module");
  const inFh = await open(src, "r");
  const size = (await inFh.stat()).size;
  const outFd = openSync(dst, "w");
  const server = createServer((sock) => {
    const fd = socketFd(sock);
    if (fd === undefined) return void sock.destroy(new Error("accepted socket has no fd"));
    void zeroCopy.sendfile(fd, inFh.fd, 0, size).then(
      () => sock.end(),
      (err: unknown) => sock.destroy(err as Error),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const buffer = Buffer.alloc(4 * 1024 * 1024);
  const started = process.hrtime.bigint();
  try {
    await new Promise<void>((resolve, reject) => {
      let pos = 0;
      const sock = connect({
        port,
        host: "127.0.0.1",
        onread: {
          buffer,
          callback: (n: number, buf: Uint8Array): boolean => {
            for (let done = 0; done < n; ) done += writeSync(outFd, buf, done, n - done, pos + done);
            pos += n;
            return true;
          },
        },
      });
      sock.on("end", () =>
        pos === size ? resolve() : reject(new Error(`raw sendfile: received ${pos} of ${size} bytes`)),
      );
      sock.on("error", reject);
    });
    return Number(process.hrtime.bigint() - started) / 1e9;
  } finally {
    closeSync(outFd);
    await inFh.close();
    server.close();
  }
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
