// A native failure that escapes into a service must keep its code and retryability: the mover's
// ack decision (nak with backoff or terminate) reads them through errorCode/isRetryable.
import { describe, expect, it } from "vitest";
import { DwcpError, errorCode, isRetryable, NoSpaceError } from "#common/errors.js";
import {
  BadFileDescriptorError,
  mapNativeError,
  NativeModuleMissingError,
  SyscallError,
  TransientIoError,
  withCallerStack,
} from "./errors.js";

/** What the C++ binding rejects with for a failed system call. */
function bindingError(code: string, errno: number, syscall: string): Error {
  return Object.assign(new Error(`${syscall}: ${code}`), { code, errno, syscall });
}

describe("native errors seen by a service", () => {
  it.each([
    ["EAGAIN", -11],
    ["EINTR", -4],
    ["EBUSY", -16],
    ["EIO", -5],
  ])("%s is a retryable IO_TRANSIENT DwcpError", async (code, errno) => {
    const err = await withCallerStack(() => Promise.reject(bindingError(code, errno, "pwrite"))).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TransientIoError);
    expect(err).toBeInstanceOf(DwcpError);
    expect(errorCode(err)).toBe("IO_TRANSIENT");
    expect(isRetryable(err)).toBe(true);
    expect((err as SyscallError).sysCode).toBe(code);
  });

  it("a mapped rejection carries the stack of the code that awaited the call", async () => {
    // As the wrappers call it (`return await`), under a caller that awaits the wrapper.
    const wrapper = async (): Promise<unknown> =>
      await withCallerStack(() => Promise.reject(bindingError("EIO", -5, "pread")));
    const nativeCallerForTheSpec = async (): Promise<unknown> => await wrapper();
    const err = await nativeCallerForTheSpec().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransientIoError);
    expect((err as Error).stack).toContain("nativeCallerForTheSpec");
  });

  it("ENOSPC and EDQUOT become the shared NoSpaceError, retryable once space is freed", () => {
    for (const code of ["ENOSPC", "EDQUOT"]) {
      const err = mapNativeError(bindingError(code, -28, "copy_file_range"));
      expect(err).toBeInstanceOf(NoSpaceError);
      expect(errorCode(err)).toBe("NO_SPACE");
      expect(isRetryable(err)).toBe(true);
      expect((err as NoSpaceError).sysCode).toBe(code);
    }
  });

  it("EBADF is permanent, and so is an errno without a class of its own", () => {
    const badFd = mapNativeError(bindingError("EBADF", -9, "sendfile"));
    expect(badFd).toBeInstanceOf(BadFileDescriptorError);
    expect([errorCode(badFd), isRetryable(badFd)]).toEqual(["BAD_FILE_DESCRIPTOR", false]);
    const other = mapNativeError(bindingError("EROFS", -30, "pwrite"));
    expect([errorCode(other), isRetryable(other)]).toEqual(["SYSCALL_FAILED", false]);
  });

  it("an error thrown by the loader keeps its code", () => {
    const err = new NativeModuleMissingError("not built");
    expect(errorCode(err)).toBe("NATIVE_MODULE_MISSING");
    expect(isRetryable(err)).toBe(false);
    expect(err.name).toBe("NativeModuleMissingError");
    expect(Object.hasOwn(err, "cause")).toBe(false);
  });
});
