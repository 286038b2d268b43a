import type { Socket } from "node:net";
import { createHash } from "node:crypto";
import type { Logger } from "#common/logger.js";
import type { SocketFrameReader } from "./frame-reader.js";
import type { SocketTuning } from "./socket-tuning.js";
import type { SealedWriter } from "./sealed-link.js";
import type { BaseSums } from "../../domain/data-channel/base-sums.js";

/**
 * An authenticated data-channel connection between batches: TCP connected, TLS done, HELLO
 * accepted for one migration. Later batches to the same destination reuse it: a batch of the same
 * migration costs no TCP, TLS or HELLO round trip, one of another migration a HELLO round trip
 * (re-authentication, see helloNonce), and both start on a congestion window that is already
 * open (on a 50 ms link a fresh connection spends several round trips in slow start per batch).
 * A thousand small migrations then share a few connections instead of a TLS handshake each.
 */
export interface Link {
  /** The migration the connection is authenticated for now. */
  migrationId: string;
  /**
   * The connection's CHALLENGE nonce (revision 1.1: the one its TLS session exports), and the
   * HELLOs sent on it (the next answers helloNonce(nonce, hellos)).
   */
  nonce: Uint8Array;
  hellos: number;
  socket: Socket;
  reader: SocketFrameReader;
  encrypted: boolean;
  /**
   * The sender's direction runs as sealed records (native AES-GCM under keys exported from the
   * TLS session): every write goes through it. Undefined: plaintext, or Node's TLS.
   */
  sealer: SealedWriter | undefined;
  tuning: SocketTuning | undefined;
  /** HELLO → AUTH_OK round trip, µs (logged; it includes both processes' scheduling). */
  handshakeUs: number;
  /** Batches this link has carried (1 while its first batch runs). */
  batches: number;
  /** Handshake bytes this side wrote, counted into the link's first batch's wire bytes. */
  pendingWireBytes: number;
  /**
   * Set on a link taken while the batch before was still finishing on it (see LinkPool.lend):
   * this batch writes once `written` and reads once `answered`.
   */
  after?: Handoff | undefined;
  /** The run that uses the link now (its idle timer is the socket's); undefined between batches. */
  owner?: object | undefined;
  /**
   * Revision 1.1: the BASE_SUMS of the volume this link's incremental batches last asked for
   * (`id` as in their BATCH_BEGIN, `key` the volume), and how many volumes were asked for on it.
   * Sums tagged with another id are of an earlier volume, and dropped.
   */
  sums?: { id: number; key: string; view: BaseSums } | undefined;
  sumsAsked?: number;
  /**
   * A HELLO for another migration, not yet written: the next run writes it ahead of its batch
   * and reads its AUTH_OK before the batch's replies (see rehello in client.ts).
   */
  hello?: Uint8Array | undefined;
}

/**
 * Where the batch before stands on a link lent to the next one: `written` resolves true once that
 * batch's BATCH_END is written (the link's writes are the next batch's), `answered` once its
 * BATCH_OK was read (the replies are the next batch's). Either resolves false if that batch failed
 * first: the link is then gone.
 */
export interface Handoff {
  written: Promise<boolean>;
  answered: Promise<boolean>;
}

interface Lent {
  link: Link;
  migrationId: string;
  handoff: Handoff;
}

interface Idle {
  link: Link;
  timer: NodeJS.Timeout;
  onGone: () => void;
}

/**
 * Idle links kept per key (destination, sender, credentials): as many as the batches a mover
 * sends at once by default (small ones, see the mover's work loop), so a steady stream of small
 * migrations finds a link for each.
 */
export const MAX_IDLE_LINKS = 16;
/** Destinations whose measured rate is remembered (a mover talks to a handful). */
const MAX_RATES = 1024;
/**
 * Least wire bytes of a batch whose rate is noted. A smaller batch's time is its round trips,
 * handshakes and fsyncs, not the link: 64 KiB in 10 ms says nothing of a 10 Gbit/s link, and
 * taking it for the link's rate would have every later batch compressed for a slow link.
 */
export const RATE_SAMPLE_MIN_BYTES = 4 << 20;
/** An idle link is closed after this long; well inside the data server's idle timeout (120 s). */
export const LINK_IDLE_MS = 20_000;

/**
 * Idle authenticated links, per destination and sender. A batch takes one (or dials), and
 * gives it back only after a clean BATCH_OK with nothing unread: a link that failed in any way is
 * destroyed, never reused. An idle link the destination closed, or that received anything, is
 * dropped; one idle for LINK_IDLE_MS is closed. Idle sockets are unref'd: they keep no process up.
 */
export class LinkPool {
  private readonly idle = new Map<string, Idle[]>();
  /** Links whose batch has written every chunk and is finishing, per key (see lend). */
  private readonly lent = new Map<string, Lent[]>();
  /** Fastest rate a batch reached per destination address, bytes/s (see noteRate). */
  private readonly rates = new Map<string, number>();

  constructor(
    private readonly idleMs = LINK_IDLE_MS,
    private readonly maxIdle = MAX_IDLE_LINKS,
  ) {}

  /**
   * An idle link for `key` that still looks usable; else, for `migrationId`, a link its batch
   * before lent (with `after` set: the caller waits on it); else undefined.
   */
  take(key: string, migrationId?: string): Link | undefined {
    return this.takeIdle(key) ?? (migrationId === undefined ? undefined : this.takeLent(key, migrationId));
  }

  /**
   * A batch that has written every chunk of a run on a long link, and now waits for their
   * acknowledgements and its BATCH_OK, lends the link to the next batch of its migration: that
   * batch writes right behind its BATCH_END instead of opening a connection (a handshake and a
   * congestion window grown from nothing, seconds across a lossy long link) or taking one left
   * idle long enough for the kernel to shrink its window. Returns the withdrawal, for when the
   * lender is done: it withdraws a link nobody took (true), or says the link was taken (false:
   * the borrower owns it now).
   */
  lend(key: string, link: Link, migrationId: string, handoff: Handoff): () => boolean {
    const entry: Lent = { link, migrationId, handoff };
    const list = this.lent.get(key) ?? [];
    list.push(entry);
    this.lent.set(key, list);
    return () => {
      const now = this.lent.get(key);
      const at = now?.indexOf(entry) ?? -1;
      if (now === undefined || at < 0) return false;
      now.splice(at, 1);
      if (now.length === 0) this.lent.delete(key);
      return true;
    };
  }

  private takeLent(key: string, migrationId: string): Link | undefined {
    const list = this.lent.get(key);
    const at = list?.findIndex((e) => e.migrationId === migrationId && !e.link.socket.destroyed) ?? -1;
    if (list === undefined || at < 0) return undefined;
    const [entry] = list.splice(at, 1) as [Lent];
    if (list.length === 0) this.lent.delete(key);
    entry.link.after = entry.handoff;
    return entry.link;
  }

  private takeIdle(key: string): Link | undefined {
    const list = this.idle.get(key);
    while (list !== undefined && list.length > 0) {
      const entry = list.pop() as Idle;
      this.forget(entry);
      if (list.length === 0) this.idle.delete(key);
      if (usable(entry.link)) {
        entry.link.socket.ref();
        return entry.link;
      }
      entry.link.socket.destroy();
    }
    return undefined;
  }

  /** Keep a link whose batch ended cleanly for the next batch of the same key. */
  give(key: string, link: Link, log: Logger): void {
    const list = this.idle.get(key) ?? [];
    if (!usable(link) || list.length >= this.maxIdle) {
      link.socket.destroy();
      return;
    }
    link.socket.setTimeout(0);
    link.socket.unref();
    const entry: Idle = {
      link,
      timer: setTimeout(() => {
        this.drop(key, entry);
        log.debug({ batches: link.batches }, "idle data link closed");
      }, this.idleMs),
      onGone: () => this.drop(key, entry),
    };
    entry.timer.unref();
    link.socket.once("close", entry.onGone);
    link.socket.once("end", entry.onGone);
    list.push(entry);
    this.idle.set(key, list);
  }

  /**
   * Record the rate a batch to `address` reached: its wire bytes over its duration, for a batch
   * of at least RATE_SAMPLE_MIN_BYTES. A batch's rate is a lower bound of the link's (the batch
   * may have waited on the CPU or the disk), so the fastest seen is kept: a slow, CPU-bound batch
   * does not make the link look slower.
   */
  noteRate(address: string, wireBytes: number, durationMs: number): void {
    if (!(wireBytes >= RATE_SAMPLE_MIN_BYTES) || !(durationMs > 0)) return;
    const bytesPerSec = wireBytes / (durationMs / 1000);
    if (!Number.isFinite(bytesPerSec)) return;
    if (!this.rates.has(address) && this.rates.size >= MAX_RATES) this.rates.clear();
    this.rates.set(address, Math.max(this.rates.get(address) ?? 0, bytesPerSec));
  }

  /** The fastest rate a batch to `address` reached, bytes/s; undefined before the first. */
  rateOf(address: string): number | undefined {
    return this.rates.get(address);
  }

  /** Idle links held for `key` (tests). */
  idleCount(key: string): number {
    return this.idle.get(key)?.length ?? 0;
  }

  /** Links lent for `key` and not taken (tests). */
  lentCount(key: string): number {
    return this.lent.get(key)?.length ?? 0;
  }

  /** Close every idle link (mover shutdown). */
  closeAll(): void {
    for (const [key, list] of [...this.idle]) for (const entry of [...list]) this.drop(key, entry);
  }

  private drop(key: string, entry: Idle): void {
    const list = this.idle.get(key);
    const at = list?.indexOf(entry) ?? -1;
    if (list !== undefined && at >= 0) {
      list.splice(at, 1);
      if (list.length === 0) this.idle.delete(key);
    }
    this.forget(entry);
    entry.link.socket.destroy();
  }

  private forget(entry: Idle): void {
    clearTimeout(entry.timer);
    entry.link.socket.off("close", entry.onGone);
    entry.link.socket.off("end", entry.onGone);
  }
}

/** Open both ways, nothing unread: the destination sends nothing between batches. */
function usable(link: Link): boolean {
  const s = link.socket;
  return !s.destroyed && s.writable && !s.readableEnded && link.reader.decoder.buffered === 0 && s.readableLength === 0;
}

/**
 * The pool key: destination address, the host it must prove to be (TLS) or none, the sending
 * host, the TLS credentials, and a digest of the cluster secret (a link authenticated with one
 * secret is never lent to a batch holding another). Not the migration: a link re-authenticates
 * for each migration it carries.
 */
export function linkKey(o: {
  address: string;
  destHost: string | undefined;
  sourceHost: string;
  secret: Uint8Array;
  tlsId: number;
}): string {
  const secret = createHash("sha256").update("dwcp/v1/link-pool/").update(o.secret).digest("base64url").slice(0, 16);
  return [o.address, o.destHost ?? "", o.tlsId, o.sourceHost, secret].join("\0");
}

/** The process's pool of data links (one per mover process, shared by its batches). */
export const links = new LinkPool();
