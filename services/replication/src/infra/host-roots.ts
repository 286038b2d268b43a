import { mkdir, realpath } from "node:fs/promises";
import { isAbsolute, posix, relative, resolve } from "node:path";
import { ConfigError } from "#common/errors.js";
import { openRootDir, PathRefusedError, type DirHandle } from "#native/index.js";
import { PathKindError, PathNotFoundError, PathOutsideRootError } from "../domain/errors.js";

/** A host's roots: HOST -> directory, and whether the operator named that host explicitly. */
export interface HostRoots {
  (host: string): string;
  /** Whether `host` was given in `roots` (then it is a host of this deployment without asking). */
  configured(host: string): boolean;
  /** Whether any root was given (a deployment); else every host's root is under the data dir (`dwcp up`). */
  explicit: boolean;
}

/** HOST -> directory: `roots` "a=/srv/a,b=/srv/b", else <dataDir>/hosts/<host> (the `dwcp up` layout). */
export function hostRoots(roots: string | undefined, dataDir = ".dwcp"): HostRoots {
  const map = new Map<string, string>();
  for (const pair of (roots ?? "").split(",").filter(Boolean)) {
    const [h, d] = pair.split("=");
    if (!h || !d) throw new ConfigError([`--roots must be HOST=DIR[,HOST=DIR], got "${roots}"`]);
    map.set(h, resolve(d));
  }
  return Object.assign((host: string) => map.get(host) ?? resolve(dataDir, "hosts", host), {
    configured: (host: string) => map.has(host),
    explicit: map.size > 0,
  });
}

/** `p` resolved under `root`, or undefined when it leaves the root (lexically: `..`, another absolute path). */
export function inside(root: string, p: string): string | undefined {
  const abs = resolve(root, p);
  const rel = relative(resolve(root), abs);
  return rel.startsWith("..") || isAbsolute(rel) ? undefined : abs;
}

const MAX_PATH = 4096;

const isInside = (root: string, p: string): boolean =>
  p === root || p.startsWith(root.endsWith("/") ? root : `${root}/`);

/**
 * A host's root directory held open by fd for one command. Paths a command names are confined to
 * it in two steps, as the mover does: the path itself (no `..`, no NUL, not an absolute path
 * elsewhere), then its realpath, which must still be beneath the root's realpath. What is then
 * opened, created or renamed is reached from the held fd with no symlink followed (DirHandle:
 * openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so a component swapped for a symlink after the
 * check is refused, not followed. The root itself is the operator's (configured): trusted as is.
 */
export class HostRoot {
  private constructor(
    /** The root as configured (for messages and logs). */
    readonly path: string,
    /** Its realpath: confined paths are relative to it. */
    readonly real: string,
    readonly dir: DirHandle,
  ) {}

  /** Opens (with `create`, first makes) the root of a host. */
  static async open(path: string, o: { create?: boolean } = {}): Promise<HostRoot> {
    const abs = resolve(path);
    if (o.create) await mkdir(abs, { recursive: true });
    const real = await realpath(abs).catch((err: unknown) => {
      throw new PathNotFoundError(abs, { cause: err });
    });
    return new HostRoot(abs, real, openRootDir(real));
  }

  /**
   * The path `p` (relative to the root, or absolute under it) as a path relative to the root's
   * realpath, every symlink in it resolved and checked to stay beneath the root. With
   * `mustExist: false` its missing tail is appended to its nearest existing ancestor.
   * PathOutsideRootError / PathNotFoundError carry `p` as given.
   */
  async confine(p: string, o: { mustExist: boolean }): Promise<string> {
    if (p.length === 0) throw new PathOutsideRootError(p, "is empty");
    if (p.length > MAX_PATH) throw new PathOutsideRootError(p, `is longer than ${MAX_PATH} characters`);
    if (p.includes("\0")) throw new PathOutsideRootError(p, "contains a NUL byte");
    if (p.split("/").includes("..")) throw new PathOutsideRootError(p, "must not contain '..' segments");
    const abs = posix.resolve(this.path, p);
    // An absolute path may name the root by its configured or its canonical spelling.
    const base = isInside(this.path, abs) ? this.path : isInside(this.real, abs) ? this.real : undefined;
    if (base === undefined) throw new PathOutsideRootError(p, "is outside this host's root");
    const missing: string[] = [];
    let probe = posix.join(this.real, posix.relative(base, abs));
    for (;;) {
      let real: string | undefined;
      try {
        real = await realpath(probe);
      } catch (err) {
        if ((err as { code?: unknown }).code !== "ENOENT") throw err;
        if (o.mustExist) throw new PathNotFoundError(p, { cause: err });
        if (probe === this.real) throw new PathNotFoundError(p, { cause: err });
        missing.unshift(posix.basename(probe));
        probe = posix.dirname(probe);
        continue;
      }
      if (!isInside(this.real, real))
        throw new PathOutsideRootError(p, "resolves outside this host's root (through a symlink)");
      const rel = posix.join(posix.relative(this.real, real), ...missing);
      return rel === "." ? "" : rel;
    }
  }

  /**
   * A failure met beneath the held fd as this service's error for `asked` (as given: the host path
   * the error names stays in its cause, for the log): a symlink or `..` is PathOutsideRootError,
   * the wrong kind PathKindError, a missing entry PathNotFoundError; others pass.
   */
  static refused(asked: string, err: unknown): unknown {
    if ((err as { sysCode?: unknown }).sysCode === "ENOENT") return new PathNotFoundError(asked, { cause: err });
    // A directory opened with no symlink followed: openat2 answers ENOTDIR, not ELOOP, for a
    // symlink in last place, so this may be one (a file would be refused the same way).
    if ((err as { sysCode?: unknown }).sysCode === "ENOTDIR")
      return new PathOutsideRootError(asked, "is not a directory beneath this host's root (a file, or a symlink)", {
        cause: err,
      });
    if (!(err instanceof PathRefusedError)) return err;
    if (err.refusal === "not-a-file") return new PathKindError(asked, "a regular file", { cause: err });
    if (err.refusal === "not-a-directory") return new PathKindError(asked, "a directory", { cause: err });
    return new PathOutsideRootError(asked, `was refused when opened beneath this host's root (${err.refusal})`, {
      cause: err,
    });
  }

  close(): void {
    this.dir.close();
  }
}
