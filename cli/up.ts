import { join, resolve } from "node:path";
import { pino } from "pino";
import { startFederation } from "../services/federation/src/index.js";
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
  await untilSignal();
  process.stdout.write("stopping...\n");
  await stack.stop();
  return 0;
}

const untilSignal = (): Promise<void> =>
  new Promise<void>((r) => {
    process.once("SIGINT", () => r());
    process.once("SIGTERM", () => r());
  });

/** `dwcp up --sites N`: N federated sites, each its own nats-server and JetStream domain. */
export async function runUpSites(opts: { dataDir: string; sites: number }): Promise<number> {
  if (!Number.isInteger(opts.sites) || opts.sites < 1 || opts.sites > 16) throw new Error(`--sites must be 1 to 16, got ${opts.sites}`);
  const dataDir = resolve(opts.dataDir);
  const log = pino({ name: "dwcp", base: { svc: "federation" } }, pino.destination({ dest: join(dataDir, "logs", "federation.log"), mkdir: true }));
  const fed = await startFederation({ sites: opts.sites, dataDir, partitionable: false }, { log });
  process.stdout.write(
    `dwcp federation is up (${fed.topology} topology)\n` +
      fed.sites.map((s) => `  site ${s.id}: ${s.url}\n`).join("") +
      `  logs:    ${join(dataDir, "logs")}\ntry: DWCP_NATS_URL=${fed.sites[0]?.url ?? ""} npx dwcp federation status\nCtrl-C stops everything.\n`,
  );
  await untilSignal();
  process.stdout.write("stopping...\n");
  await fed.stop();
  return 0;
}
