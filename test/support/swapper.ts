// A real rename race for the path-confinement suites: a python3 process exchanges two entries
// (renameat2 RENAME_EXCHANGE) as fast as it can, so a path checked by name may be another by the
// time it is opened.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";

const SWAPPER = `
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
n = 0
while True:
    if libc.renameat2(-100, a, -100, b, 2) != 0:
        sys.exit(ctypes.get_errno())
    n += 1
    if n == 1:
        print("swapping", flush=True)
`;

/** Starts exchanging `a` and `b` in a loop; resolves once the first exchange is done. */
export async function startSwapper(a: string, b: string): Promise<ChildProcess> {
  const child = spawn("python3", ["-c", SWAPPER, a, b], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout });
  const [first] = (await Promise.race([once(lines, "line"), once(child, "exit")])) as [unknown];
  if (first !== "swapping") throw new Error(`swapper did not start: ${String(first)}`);
  return child;
}

export async function stopSwapper(child: ChildProcess): Promise<void> {
  const exited = once(child, "exit");
  child.kill("SIGKILL");
  await exited;
}
