import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

// A tiny guest for QEMU tests: Debian's kernel (apt-get download) and a busybox initramfs whose
// init counts. Each step i writes a log block (block i: "DWCPLOG1" + i) and then the header
// (block 0: "DWCPCTR1" + i), each fsynced, and prints "dwcp-counter i" on the serial console.
// At boot it continues from the header's count. An image is a consistent point in time when its
// log is contiguous from 1 to some L, no entry lies beyond L, and the header says L or L - 1
// (the step between the two writes); checkCounterImage says which. With `dwcp.dirty` on the
// kernel command line it also keeps rewriting 1 MiB of its RAM.

const MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk"];

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in ${MODULES.join(" ")}; do insmod /lib/modules/$m.ko; done
while [ ! -b /dev/vda ]; do usleep 10000; done
hdr=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 24)
seq=0
case "$hdr" in DWCPCTR1*) seq=$(echo "$hdr" | cut -c9-24 | sed 's/^0*//'); seq=\${seq:-0};; esac
echo "dwcp-guest boot seq=$seq" > /dev/ttyS0
# dwcp.dirty on the kernel command line: also rewrite 1 MiB of RAM with random bytes, forever (a
# guest whose memory precopy cannot catch up with at a tight downtime limit).
case " $(cat /proc/cmdline) " in
  *" dwcp.dirty "*)
    (while true; do dd if=/dev/urandom of=/tmp/dirt bs=4096 count=256 conv=notrunc 2>/dev/null; done) & ;;
esac
max=$(( $(blockdev --getsz /dev/vda) - 1 ))
while [ $seq -lt $max ]; do
  seq=$((seq + 1))
  printf 'DWCPLOG1%016d\\n' $seq | dd of=/dev/vda bs=512 seek=$seq conv=sync,notrunc,fsync 2>/dev/null
  printf 'DWCPCTR1%016d\\n' $seq | dd of=/dev/vda bs=512 seek=0 conv=sync,notrunc,fsync 2>/dev/null
  echo "dwcp-counter $seq" > /dev/ttyS0
done
echo "dwcp-guest full" > /dev/ttyS0
poweroff -f
`;

export interface Guest {
  kernel: string;
  initrd: string;
  /** The kernel command line the guest expects. */
  append: string;
}

const INIT_HASH = createHash("sha256").update(INIT).update(MODULES.join(",")).digest("base64url").slice(0, 16);

/**
 * Builds (or finds in the cache) the guest's kernel and initramfs. Each version of the guest has
 * a cache directory of its own, so checkouts with different guests on one machine share none.
 */
export function buildGuest(cacheDir = join(homedir(), ".cache", "dwcp", "guest", INIT_HASH)): Guest {
  const kernel = join(cacheDir, "vmlinuz");
  const initrd = join(cacheDir, "initrd.img");
  const append = "console=ttyS0 quiet panic=-1";
  const initHash = INIT_HASH;
  const stamp = join(cacheDir, "stamp");
  if (existsSync(kernel) && existsSync(initrd) && existsSync(stamp) && readFileSync(stamp, "utf8") === initHash)
    return { kernel, initrd, append };
  const work = join(cacheDir, "work");
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const download = (pkgs: string[]): void => {
    try {
      execFileSync("apt-get", ["download", ...pkgs], { cwd: work, stdio: "pipe" });
    } catch {
      execFileSync("apt-get", ["update", "-qq"], { stdio: "pipe" });
      execFileSync("apt-get", ["download", ...pkgs], { cwd: work, stdio: "pipe" });
    }
  };
  download(["linux-image-amd64"]);
  const meta = readdirSync(work).find((f) => f.startsWith("linux-image-amd64_"));
  const depends = execFileSync("dpkg-deb", ["-f", join(work, meta ?? ""), "Depends"], { encoding: "utf8" }).trim();
  const image = /linux-image-[0-9][^\s,]*/.exec(depends)?.[0];
  if (image === undefined) throw new Error(`linux-image-amd64 depends on no kernel image: ${depends}`);
  download([image, "busybox-static"]);
  for (const deb of readdirSync(work).filter((f) => f.endsWith(".deb") && !f.startsWith("linux-image-amd64_")))
    execFileSync("dpkg-deb", ["-x", join(work, deb), join(work, "x")]);
  const x = join(work, "x");
  const vmlinuz = readdirSync(join(x, "boot")).find((f) => f.startsWith("vmlinuz-"));
  const version = vmlinuz?.slice("vmlinuz-".length);
  if (vmlinuz === undefined || version === undefined) throw new Error("no vmlinuz in the kernel package");
  const moduleFiles = MODULES.map((m) => {
    const found = execFileSync("find", [join(x, "lib/modules", version), "-name", `${m}.ko`], { encoding: "utf8" })
      .trim()
      .split("\n")[0];
    if (!found) throw new Error(`module ${m} not in the kernel package`);
    return { name: `lib/modules/${m}.ko`, data: readFileSync(found), mode: 0o100644 };
  });
  const cpio = newc([
    ...["bin", "dev", "proc", "sys", "lib", "lib/modules"].map((d) => ({ name: d, mode: 0o040755 })),
    { name: "dev/console", mode: 0o020600, rdev: [5, 1] as const },
    { name: "init", data: Buffer.from(INIT), mode: 0o100755 },
    { name: "bin/busybox", data: readFileSync(join(x, "bin/busybox")), mode: 0o100755 },
    ...moduleFiles,
  ]);
  writeFileSync(`${initrd}.tmp`, gzipSync(cpio));
  writeFileSync(`${kernel}.tmp`, readFileSync(join(x, "boot", vmlinuz)));
  renameSync(`${initrd}.tmp`, initrd);
  renameSync(`${kernel}.tmp`, kernel);
  writeFileSync(stamp, initHash);
  rmSync(work, { recursive: true, force: true });
  return { kernel, initrd, append };
}

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: readonly [number, number];
}

/** A cpio archive in the "newc" format the kernel unpacks as an initramfs. */
function newc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const hex = (n: number): string => n.toString(16).padStart(8, "0");
  const pad = (len: number): Buffer => Buffer.alloc((4 - (len % 4)) % 4);
  let ino = 1;
  for (const e of [...entries, { name: "TRAILER!!!", mode: 0 } as CpioEntry]) {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const rdev = e.rdev ?? [0, 0];
    const header =
      "070701" + [ino++, e.mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], name.length, 0].map(hex).join("");
    parts.push(Buffer.from(header), name, pad(110 + name.length), data, pad(data.length));
  }
  return Buffer.concat(parts);
}

export interface CounterImage {
  consistent: boolean;
  /** The header's count. */
  header: number;
  /** The last entry of the contiguous log. */
  log: number;
  reason?: string;
}

/**
 * Whether an image of the counting guest's disk is a consistent point in time. Read in pieces: a
 * disk of 2 GiB or more is past what one readFileSync may return.
 */
export function checkCounterImage(file: string): CounterImage {
  const fd = openSync(file, "r");
  try {
    const blocks = Math.floor(fstatSync(fd).size / 512);
    const piece = Buffer.alloc(16 * 1024 * 1024);
    let pieceStart = -1;
    const entry = (block: number, magic: string): number | undefined => {
      const at = block * 512;
      if (pieceStart < 0 || at < pieceStart || at + 512 > pieceStart + piece.length) {
        pieceStart = at;
        piece.fill(0);
        readSync(fd, piece, 0, piece.length, at);
      }
      if (piece[at - pieceStart] !== 0x44) return undefined; // "D": most blocks are not entries
      const text = piece.subarray(at - pieceStart, at - pieceStart + 24).toString("latin1");
      return text.startsWith(magic) ? Number(text.slice(8, 24)) : undefined;
    };
    const header = entry(0, "DWCPCTR1") ?? 0;
    let log = 0;
    while (log + 2 <= blocks && entry(log + 1, "DWCPLOG1") === log + 1) log++;
    for (let b = log + 2; b + 1 <= blocks; b++) {
      if (entry(b, "DWCPLOG1") !== undefined)
        return {
          consistent: false,
          header,
          log,
          reason: `log entry ${b} lies beyond the contiguous log ending at ${log}`,
        };
    }
    if (header !== log && header !== log - 1)
      return { consistent: false, header, log, reason: `the header says ${header}, the log ends at ${log}` };
    return { consistent: true, header, log };
  } finally {
    closeSync(fd);
  }
}

/**
 * Resolves with the serial console of VM `name` (its `serial.log` under `stateDir`, as the runner
 * writes it) once `done` holds for its text; rejects after `timeoutMs` with the console's tail.
 */
export async function serialWhen(
  stateDir: string,
  name: string,
  done: (text: string) => boolean,
  what: string,
  timeoutMs: number,
): Promise<string> {
  const file = join(stateDir, name, "serial.log");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(file) ? readFileSync(file, "latin1") : "";
    if (done(text)) return text;
    if (Date.now() > deadline) throw new Error(`the console of ${name} never ${what}:\n${text.slice(-2_000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
