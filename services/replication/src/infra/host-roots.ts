import { isAbsolute, relative, resolve } from "node:path";
import { ConfigError } from "#common/errors.js";

/** HOST -> directory: `roots` "a=/srv/a,b=/srv/b", else <dataDir>/hosts/<host> (the `dwcp up` layout). */
export function hostRoots(roots: string | undefined, dataDir = ".dwcp"): (host: string) => string {
  const map = new Map<string, string>();
  for (const pair of (roots ?? "").split(",").filter(Boolean)) {
    const [h, d] = pair.split("=");
    if (!h || !d) throw new ConfigError([`--roots must be HOST=DIR[,HOST=DIR], got "${roots}"`]);
    map.set(h, resolve(d));
  }
  return (host) => map.get(host) ?? resolve(dataDir, "hosts", host);
}

/** `p` resolved under `root`, or undefined when it leaves the root (lexically: `..`, another absolute path). */
export function inside(root: string, p: string): string | undefined {
  const abs = resolve(root, p);
  const rel = relative(resolve(root), abs);
  return rel.startsWith("..") || isAbsolute(rel) ? undefined : abs;
}
