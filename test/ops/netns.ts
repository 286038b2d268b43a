import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";

// Hosts as network namespaces: one namespace per host, each with its own address on a bridge
// that lives in a namespace of its own, and a veth from the root namespace onto that bridge so
// the test (and the control node's playbooks) reach every host. Names carry a per-run id and the
// /24 is one no route of the root namespace uses yet, so concurrent runs do not collide.
// remove() deletes every namespace, which destroys every veth and the bridge with it.

const ip = (...args: string[]): Promise<string> =>
  new Promise((done, fail) =>
    execFile("ip", args, (err, stdout, stderr) =>
      err ? fail(new Error(`ip ${args.join(" ")}: ${stderr || err.message}`)) : done(stdout),
    ),
  );

export interface Netns {
  /** The namespace of host `h`. */
  ns(h: string): string;
  /** The address of host `h`. */
  address(h: string): string;
  /** Deletes every namespace of the run (idempotent; also after a partial setup). */
  remove(): Promise<void>;
}

/** A /24 of 10.251.0.0/16 that no route of the root namespace covers yet. */
async function freeSubnet(): Promise<number> {
  const routes = await ip("-4", "route", "show");
  for (let i = 0; i < 64; i++) {
    const n = 1 + (randomBytes(1)[0]! % 250);
    if (!routes.includes(`10.251.${n}.`)) return n;
  }
  throw new Error("no free /24 in 10.251.0.0/16");
}

/** Creates a namespace per host, hosts[i] at 10.251.N.(i+1); the root namespace at .254. */
export async function createNetns(hosts: readonly string[]): Promise<Netns> {
  if (!existsSync("/run/netns")) mkdirSync("/run/netns", { recursive: true });
  const run = `${process.pid.toString(36)}${randomBytes(2).toString("hex")}`;
  const subnet = await freeSubnet();
  const bridgeNs = `dwcp-${run}-br`;
  const names = new Map(hosts.map((h, i) => [h, { ns: `dwcp-${run}-${i}`, ip: `10.251.${subnet}.${i + 1}` }]));
  const created: string[] = [];
  const remove = async (): Promise<void> => {
    for (const n of created.splice(0).reverse()) await ip("netns", "del", n).catch(() => undefined);
  };
  const add = async (n: string): Promise<void> => {
    await ip("netns", "add", n);
    created.push(n);
    await ip("-n", n, "link", "set", "lo", "up");
  };
  try {
    await add(bridgeNs);
    await ip("-n", bridgeNs, "link", "add", "br0", "type", "bridge");
    await ip("-n", bridgeNs, "link", "set", "br0", "up");
    let port = 0;
    for (const { ns, ip: addr } of names.values()) {
      await add(ns);
      const side = `p${port++}`;
      await ip("-n", bridgeNs, "link", "add", side, "type", "veth", "peer", "name", "eth0", "netns", ns);
      await ip("-n", bridgeNs, "link", "set", side, "master", "br0", "up");
      await ip("-n", ns, "addr", "add", `${addr}/24`, "dev", "eth0");
      await ip("-n", ns, "link", "set", "eth0", "up");
    }
    // The root namespace's end: deleting the bridge namespace destroys its peer, and so this one.
    const root = `dw${run}`.slice(0, 15);
    await ip("link", "add", root, "type", "veth", "peer", "name", "up0", "netns", bridgeNs);
    await ip("-n", bridgeNs, "link", "set", "up0", "master", "br0", "up");
    await ip("addr", "add", `10.251.${subnet}.254/24`, "dev", root);
    await ip("link", "set", root, "up");
  } catch (err) {
    await remove();
    throw err;
  }
  const of = (h: string): { ns: string; ip: string } => {
    const v = names.get(h);
    if (v === undefined) throw new Error(`no namespace for host ${h}`);
    return v;
  };
  return { ns: (h) => of(h).ns, address: (h) => of(h).ip, remove };
}
