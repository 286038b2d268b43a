// Sealed data records: AES-128-GCM in native code (OpenSSL EVP) on the libuv pool, for the
// data channel's bulk direction after its TLS handshake (see
// services/common/secure-link/sealed.ts). Available only with the native module.
import { InvalidArgumentError, mapNativeError, withCallerStack, ZeroCopyUnavailableError } from "./errors.js";
import type { NativeBinding } from "./loader.js";
import { assertFd, assertLength, assertPositiveInt } from "./validate.js";

/** Bytes of a record header: type, length, counter, GCM tag. */
export const SEALED_HEADER_BYTES = 32;
export const SEALED_KEY_BYTES = 16;
export const SEALED_IV_BYTES = 12;
/** Largest record: the largest chunk (64 MiB) plus a frame header and its segment table. */
export const SEALED_MAX_RECORD_BYTES = 64 * 1024 * 1024 + 256 * 1024;

/** Largest record a tunnel's pump writes or accepts. */
export const SEALED_PUMP_RECORD_BYTES = 1024 * 1024;

/** One direction's key and IV base, from the TLS exporter. */
export interface SealKeys {
  key: Uint8Array;
  iv: Uint8Array;
}

/** A record read that may stop when the peer goes quiet, and continue (see recvOpen). */
export interface SealedResume {
  /** Header and body bytes of the record received so far; zero between records. */
  progress: Int32Array;
  stallMs: number;
}

export interface Sealed {
  readonly available: boolean;
  /**
   * Seals each part in place as one record (counters `counter`, `counter + 1`, ...) and writes
   * all of them to the non-blocking socket `fd` with writev, waiting for POLLOUT in 50 ms slices
   * (ETIMEDOUT after timeoutMs without progress, ECANCELED once cancel[0] is non-zero). The parts'
   * bytes are ciphertext afterwards. Resolves to the bytes written. Runs on the libuv pool.
   */
  sealSend(
    fd: number,
    keys: SealKeys,
    counter: bigint,
    parts: readonly Uint8Array[],
    timeoutMs: number,
    cancel: Int32Array,
  ): Promise<number>;
  /**
   * Receives the record with counter `counter` from `fd`: its header into `header` (32 bytes),
   * its ciphertext into buf[offset, offset + capacity), and opens it there. Resolves to its
   * length (1..capacity), or -1 at a clean EOF before it. Rejects with SealedRecordForgedError
   * (tag) or SealedRecordInvalidError (order, header, length, truncation); buf's range then holds
   * nothing usable. The socket must not be read by anyone else meanwhile.
   *
   * With `resume`, no byte for `resume.stallMs` inside a record resolves to -2 with what arrived
   * kept in `resume.progress` (header and body bytes): the peer gone quiet (a cut link) does not
   * keep a pool thread for the whole timeout. Calling again with the same arguments continues the
   * record; progress is back at zero once it ends either way.
   */
  recvOpen(
    fd: number,
    keys: SealKeys,
    counter: bigint,
    header: Uint8Array,
    buf: Uint8Array,
    offset: number,
    capacity: number,
    timeoutMs: number,
    cancel: Int32Array,
    resume?: SealedResume,
  ): Promise<number>;
  /**
   * One direction of a tunnel as sealed records, on a thread of its own until the stream ends.
   * Sealing (`opening` false) reads what the local socket `from` has (at most
   * SEALED_PUMP_RECORD_BYTES), seals it as record 0, 1, ... and writes it to the link `to`; at
   * `from`'s EOF it writes an empty record, the authenticated end, and resolves. Opening reads
   * records from the link `from`, opens each and writes its plaintext to the local socket `to`,
   * and resolves at the empty record; an EOF before it rejects with SealedRecordInvalidError
   * (SEALED_TRUNCATED), as does a record out of order or too long; a forged one rejects with
   * SealedRecordForgedError and none of its bytes are written. Resolves to the plaintext bytes
   * carried. Waits poll in 50 ms slices: ECANCELED once cancel[0] is non-zero, ETIMEDOUT when a
   * write or a record begun makes no progress for timeoutMs; a quiet stream never times out.
   * Both fds must stay open, and neither be read in this direction by anyone else, until it settles.
   */
  pump(
    from: number,
    to: number,
    keys: SealKeys,
    opening: boolean,
    timeoutMs: number,
    cancel: Int32Array,
  ): Promise<number>;
  /** Whether `fd` has bytes (or an EOF or error) to read now; never waits. Synchronous. */
  readable(fd: number): boolean;
  /** Seals `data` in place as record `counter`, its header into `header` (tests, fuzzing). */
  seal(keys: SealKeys, counter: bigint, header: Uint8Array, data: Uint8Array): Promise<void>;
  /** Opens `data` in place against `header` as record `counter` (tests, fuzzing). */
  open(keys: SealKeys, counter: bigint, header: Uint8Array, data: Uint8Array): Promise<void>;
}

const missing = (): Promise<never> =>
  Promise.reject(new ZeroCopyUnavailableError("sealed records need the native module: check sealed.available"));

export const unavailableSealed: Sealed = {
  available: false,
  sealSend: missing,
  recvOpen: missing,
  pump: missing,
  readable: () => {
    throw new ZeroCopyUnavailableError("sealed records need the native module: check sealed.available");
  },
  seal: missing,
  open: missing,
};

const MAX_COUNTER = 2n ** 64n - 1n;

function checkKeys(keys: SealKeys, counter: bigint): void {
  if (keys.key.length !== SEALED_KEY_BYTES || keys.iv.length !== SEALED_IV_BYTES)
    throw new InvalidArgumentError(`sealed: key must be ${SEALED_KEY_BYTES} bytes and iv ${SEALED_IV_BYTES}`);
  if (counter < 0n || counter > MAX_COUNTER) throw new InvalidArgumentError("sealed: counter outside 0..2^64-1");
}

function checkRecord(what: string, length: number): void {
  assertLength(what, length);
  if (length > SEALED_MAX_RECORD_BYTES)
    throw new InvalidArgumentError(`sealed: ${what} ${length} exceeds ${SEALED_MAX_RECORD_BYTES} bytes`);
}

export function nativeSealed(b: NativeBinding): Sealed {
  return {
    available: true,
    async sealSend(fd, keys, counter, parts, timeoutMs, cancel) {
      assertFd("fd", fd);
      checkKeys(keys, counter);
      if (parts.length === 0) throw new InvalidArgumentError("sealSend: no parts");
      for (const p of parts) checkRecord("part length", p.length);
      assertPositiveInt("timeoutMs", timeoutMs, 0x7fffffff);
      if (cancel.length < 1) throw new InvalidArgumentError("sealSend: cancel must hold at least one element");
      return await withCallerStack(() => b.sealSend(fd, keys.key, keys.iv, counter, [...parts], timeoutMs, cancel));
    },
    async recvOpen(fd, keys, counter, header, buf, offset, capacity, timeoutMs, cancel, resume) {
      assertFd("fd", fd);
      checkKeys(keys, counter);
      if (header.length < SEALED_HEADER_BYTES) throw new InvalidArgumentError("recvOpen: header buffer too small");
      assertLength("offset", offset);
      checkRecord("capacity", capacity);
      if (capacity < 1 || offset + capacity > buf.length)
        throw new InvalidArgumentError(`recvOpen: ${offset}+${capacity} does not fit a ${buf.length}-byte buffer`);
      assertPositiveInt("timeoutMs", timeoutMs, 0x7fffffff);
      if (cancel.length < 1) throw new InvalidArgumentError("recvOpen: cancel must hold at least one element");
      if (resume === undefined)
        return await withCallerStack(() =>
          b.recvOpen(fd, keys.key, keys.iv, counter, header, buf, offset, capacity, timeoutMs, cancel),
        );
      if (resume.progress.length < 2) throw new InvalidArgumentError("recvOpen: progress must hold two elements");
      assertPositiveInt("stallMs", resume.stallMs, 0x7fffffff);
      return await withCallerStack(() =>
        b.recvOpen(
          fd,
          keys.key,
          keys.iv,
          counter,
          header,
          buf,
          offset,
          capacity,
          timeoutMs,
          cancel,
          resume.progress,
          resume.stallMs,
        ),
      );
    },
    async pump(from, to, keys, opening, timeoutMs, cancel) {
      assertFd("from", from);
      assertFd("to", to);
      checkKeys(keys, 0n);
      assertPositiveInt("timeoutMs", timeoutMs, 0x7fffffff);
      if (cancel.length < 1) throw new InvalidArgumentError("pump: cancel must hold at least one element");
      return await withCallerStack(() => b.pump(from, to, keys.key, keys.iv, opening, timeoutMs, cancel));
    },
    readable(fd) {
      assertFd("fd", fd);
      try {
        return b.readable(fd);
      } catch (err) {
        throw mapNativeError(err);
      }
    },
    async seal(keys, counter, header, data) {
      checkKeys(keys, counter);
      checkRecord("data length", data.length);
      if (header.length !== SEALED_HEADER_BYTES) throw new InvalidArgumentError("seal: header must be 32 bytes");
      return await withCallerStack(() => b.sealBuffer(keys.key, keys.iv, counter, header, data, false));
    },
    async open(keys, counter, header, data) {
      checkKeys(keys, counter);
      checkRecord("data length", data.length);
      if (header.length !== SEALED_HEADER_BYTES) throw new InvalidArgumentError("open: header must be 32 bytes");
      return await withCallerStack(() => b.sealBuffer(keys.key, keys.iv, counter, header, data, true));
    },
  };
}
