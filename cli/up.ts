import { resolve } from "node:path";
import { Stack } from "./stack.js";

/** `dwcp up`: the embedded stack in the foreground until Ctrl-C. */
export async function runUp(opts: { dataDir: string; hosts: string[]; natsPort?: number }): Promise<number> {
  const stack = new Stack({ dataDir: resolve(opts.dataDir), hosts: opts.hosts, natsPort: opts.natsPort });
  try {
    await stack.start();
  } catch (err) {
    await stack.stop();
    throw err;
  }
  process.stdout.write(
    `dwcp is up\n  NATS:    ${stack.url}   (export DWCP_NATS_URL=${stack.url})\n` +
      opts.hosts.map((h) => `  mover ${h}: root ${stack.root(h)}\n`).join("") +
      `  logs:    ${resolve(opts.dataDir, "logs")}\nCtrl-C stops everything.\n`,
  );
  await new Promise<void>((r) => {
    process.once("SIGINT", () => r());
    process.once("SIGTERM", () => r());
  });
  process.stdout.write("stopping...\n");
  await stack.stop();
  return 0;
}
