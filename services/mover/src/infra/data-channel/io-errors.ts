import { DwcpError } from "#common/errors.js";
import { SyscallError } from "#native/index.js";
import { DestinationWriteError, NoSpaceError, PathOutsideRootError } from "../../errors.js";
import { errnoOf } from "../volume-paths.js";

/** Map a file-system failure at the destination to the typed error the source will see. */
export function destinationError(err: unknown, what: string): DwcpError {
  // A native SyscallError is a raw errno still: it is mapped below like a Node fs error.
  if (err instanceof DwcpError && !(err instanceof SyscallError)) return err;
  const errno = errnoOf(err);
  if (errno === "ENOSPC" || errno === "EDQUOT") return new NoSpaceError(`${what}: no space left`, { cause: err });
  if (errno === "ELOOP") return new PathOutsideRootError(what, "is a symlink", { cause: err });
  return new DestinationWriteError(`${what}: ${errno ?? (err instanceof Error ? err.message : String(err))}`, {
    cause: err,
  });
}
