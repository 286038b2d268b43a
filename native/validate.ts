// Argument checks done in TypeScript before any call into C++ (C++ trusts its input).
import { InvalidArgumentError } from "./errors.js";

/** Largest buffer the native layer and the XOR delta format accept (u32 lengths). */
export const MAX_DELTA_BYTES = 0xffffffff;

function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") {
    const ctor: unknown = Reflect.get(v, "constructor");
    return typeof ctor === "function" && ctor.name !== "" ? ctor.name : "object";
  }
  if (typeof v === "string") return `string "${v}"`;
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") return `${typeof v} ${String(v)}`;
  return typeof v;
}

export function assertBytes(name: string, v: unknown): asserts v is Uint8Array {
  if (!(v instanceof Uint8Array)) {
    throw new InvalidArgumentError(`${name} must be a Uint8Array or Buffer, got ${describe(v)}`);
  }
}

export function assertU32(name: string, v: unknown): asserts v is number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new InvalidArgumentError(`${name} must be an integer in 0..2^32-1 (a CRC value), got ${describe(v)}`);
  }
}

export function assertLength(name: string, v: unknown): asserts v is number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new InvalidArgumentError(`${name} must be a non-negative safe integer (bytes), got ${describe(v)}`);
  }
}

export function assertFd(name: string, v: unknown): asserts v is number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
    throw new InvalidArgumentError(
      `${name} must be an open file descriptor (a non-negative integer), got ${describe(v)}`,
    );
  }
}

export function assertPositiveInt(name: string, v: unknown, max: number): asserts v is number {
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0 || v > max) {
    throw new InvalidArgumentError(`${name} must be an integer in 1..${max}, got ${describe(v)}`);
  }
}

export function assertSameLength(a: Uint8Array, b: Uint8Array): void {
  if (a.length !== b.length) {
    throw new InvalidArgumentError(`oldBuf and newBuf must have the same length, got ${a.length} and ${b.length}`);
  }
  if (a.length > MAX_DELTA_BYTES) {
    throw new InvalidArgumentError(`XOR delta buffers are limited to ${MAX_DELTA_BYTES} bytes, got ${a.length}`);
  }
}
