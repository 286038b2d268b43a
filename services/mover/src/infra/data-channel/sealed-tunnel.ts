import type { Socket } from "node:net";
import { sealed, socketFd, type SealKeys } from "#native/index.js";
import { ProtocolError } from "../../errors.js";
import type { FrameReader } from "./frame-reader.js";

/**
 * A raw tunnel on TLS carries its source → destination bytes as sealed records
 * (#common/secure-link/sealed.ts) instead of through Node's TLS: a native thread at each end
 * (sealed.pump) reads the local socket, seals and writes to the link, or reads the link, opens
 * and writes to the local socket, so no bulk byte passes through the event loop and no stream
 * machinery runs per read. The stream ends with an empty record, so a link cut is never taken
 * for the end. The other direction (an NBD server's replies, small) stays in Node's TLS.
 *
 * While a pump runs, its two fds must stay open and nobody else may read them in its direction:
 * the source never resumes its local socket (accepted paused) and never writes to the link
 * through TLS again; the destination stopped its TLS reads before TUNNEL_OK. A failure on either
 * side cancels the pump and waits for its thread before any socket is destroyed (a closed fd's
 * number could be reused under it).
 */

/** Bytes carried each way: towards the destination (plaintext) and back; why the pump stopped, if it failed. */
export interface Carried {
  aToB: number;
  bToA: number;
  pumpError?: Error;
}

/** How long a pump's write, or a record begun, may make no progress. */
const PUMP_TIMEOUT_MS = 60_000;

/** Stops a running pump and resolves once its thread let go of the fds. */
export interface PumpStop {
  readonly stop: () => Promise<void>;
}

/**
 * Splice `local` and the TLS `link` with this end's direction pumped as sealed records: `role`
 * "seal" at the source (local → link sealed, link → local through TLS), "open" at the
 * destination (link → local opened, local → link through TLS). Each direction's end is passed
 * on as a half-close; resolves with the bytes carried once both ended, or once either side
 * failed (both are then destroyed). `onStart` receives the handle that stops it from outside.
 */
export function sealedSplice(
  local: Socket,
  link: Socket,
  keys: SealKeys,
  role: "seal" | "open",
  onStart?: (s: PumpStop) => void,
): Promise<Carried> {
  const localFd = socketFd(local);
  const linkFd = socketFd(link);
  const counts: Carried = { aToB: 0, bToA: 0 };
  if (localFd === undefined || linkFd === undefined) {
    local.destroy();
    link.destroy();
    return Promise.resolve(counts);
  }
  local.allowHalfOpen = true;
  link.allowHalfOpen = true;
  const cancel = new Int32Array(new SharedArrayBuffer(4));
  const [src, dst] = role === "seal" ? [localFd, linkFd] : [linkFd, localFd];
  const pumped = sealed.pump(src, dst, keys, role === "open", PUMP_TIMEOUT_MS, cancel).then(
    (bytes) => {
      counts.aToB = bytes;
      return true;
    },
    (err: unknown) => {
      counts.pumpError = err as Error;
      return false;
    },
  );
  const stop = async (): Promise<void> => {
    Atomics.store(cancel, 0, 1);
    await pumped;
  };
  onStart?.({ stop });
  // The TLS direction: from the link to local at the source, from local to the link at the destination.
  const [from, to] = role === "seal" ? [link, local] : [local, link];
  return new Promise((resolve) => {
    let settled = false;
    let reverseDone = false;
    let forwardDone = false;
    const end = async (ok: boolean): Promise<void> => {
      if (settled) return;
      settled = true;
      if (!ok) await stop();
      else await pumped;
      local.destroy();
      link.destroy();
      resolve(counts);
    };
    const maybeDone = (): void => {
      if (reverseDone && forwardDone) void end(true);
    };
    from.on("data", (d: Buffer) => (counts.bToA += d.length));
    // The TLS direction's reader closing after its end was read closed cleanly (its last bytes
    // may still be on their way out); any other close before both directions ended is a failure.
    from.once("close", () => from.readableEnded || void end(false));
    to.once("close", () => (reverseDone && forwardDone) || void end(false));
    local.on("error", () => void end(false));
    link.on("error", () => void end(false));
    to.once("finish", () => {
      reverseDone = true;
      maybeDone();
    });
    from.pipe(to);
    from.resume();
    void pumped.then((ok) => {
      if (!ok) return void end(false);
      if (role === "seal") {
        forwardDone = true;
        return maybeDone();
      }
      // The end record arrived: pass the half-close on to the local socket once its writes are out.
      local.end(() => {
        forwardDone = true;
        maybeDone();
      });
    });
  });
}

/**
 * What the data server sees as a sealed tunnel's reader: it reads nothing, and stopping it stops
 * the pump, so the server's cut (abort, idle, destroy) never closes an fd under the pump's thread.
 */
export class PumpGuard implements FrameReader {
  private pump: PumpStop | undefined;
  private stopped: Promise<void> | undefined;

  constructor(readonly decoder: FrameReader["decoder"]) {}

  started(pump: PumpStop): void {
    this.pump = pump;
    if (this.stopped !== undefined) this.stopped = pump.stop();
  }
  next(): Promise<never> {
    return Promise.reject(new ProtocolError("a sealed tunnel carries no frames"));
  }
  provideChunkBuffer(): void {
    throw new ProtocolError("a sealed tunnel carries no chunks");
  }
  abort(): void {
    this.stopped ??= this.pump?.stop() ?? Promise.resolve();
  }
  detach(): void {}
  idle(): Promise<void> {
    return this.stopped ?? Promise.resolve();
  }
}
