import type { ChildProcess } from "node:child_process";

/**
 * Stop a child by PID: `signal`, then SIGKILL if it has not exited after `killAfterMs`.
 * `exited` must have been created when the child was spawned, so its exit cannot be missed.
 */
export async function stopChild(
  child: ChildProcess,
  exited: Promise<unknown>,
  signal: NodeJS.Signals = "SIGTERM",
  killAfterMs = 5_000,
): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
  await exited;
  clearTimeout(timer);
}
