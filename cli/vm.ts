import { readFileSync } from "node:fs";
import { join } from "node:path";
import { adoptVm, listVms, parseDefinition, startVm, stopVm, type VmStatus } from "#mover";
import { parseCount, UsageError } from "./args.js";

// `dwcp vm start|stop|list|adopt`: QEMU VMs on this host, from their definitions.

interface VmFlags {
  definition?: string;
  qmp?: string;
  pid?: string;
  "state-dir"?: string;
  json?: boolean;
}

/** The definition in `file`, checked: a file that is not one is a usage error (exit 2). */
function definitionOf(file: string | undefined): ReturnType<typeof parseDefinition> {
  if (file === undefined) throw new UsageError("--definition FILE is required");
  try {
    return parseDefinition(JSON.parse(readFileSync(file, "utf8")));
  } catch (err) {
    throw new UsageError(`--definition ${file}: ${(err as Error).message}`);
  }
}

const line = (v: VmStatus): string =>
  `${v.name.padEnd(24)} ${v.state.padEnd(8)} ${String(v.pid ?? "-").padEnd(8)} ${v.adopted ? "adopted" : "started"}`;

export async function runVm(positionals: string[], flags: VmFlags, out: (text: string) => void): Promise<number> {
  const stateDir = flags["state-dir"] ?? join(process.env["DWCP_DATA_DIR"] ?? ".dwcp", "vms");
  const action = positionals[0] ?? "";
  const name = positionals[1];
  const show = (v: VmStatus): void => out(flags.json ? JSON.stringify(v) : line(v));
  switch (action) {
    case "start":
      show(await startVm(definitionOf(flags.definition), stateDir));
      return 0;
    case "adopt": {
      if (flags.qmp === undefined) throw new UsageError("adopt needs --qmp SOCKET");
      const pid = flags.pid === undefined ? undefined : parseCount("--pid", flags.pid);
      show(await adoptVm(definitionOf(flags.definition), flags.qmp, stateDir, pid));
      return 0;
    }
    case "stop":
      if (name === undefined) throw new UsageError("stop needs the VM's name: dwcp vm stop NAME");
      await stopVm(stateDir, name);
      out(flags.json ? JSON.stringify({ name, state: "gone" }) : `${name} stopped`);
      return 0;
    case "list": {
      const vms = await listVms(stateDir);
      if (flags.json) out(JSON.stringify(vms));
      else out([`${"NAME".padEnd(24)} ${"STATE".padEnd(8)} ${"PID".padEnd(8)} HOW`, ...vms.map(line)].join("\n"));
      return 0;
    }
    default:
      throw new UsageError(`vm needs an action: start, stop, list or adopt (got ${JSON.stringify(action ?? "")})`);
  }
}
