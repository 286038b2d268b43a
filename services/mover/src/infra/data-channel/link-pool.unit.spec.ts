import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import { silentLogger } from "#common/logger.js";
import { LinkPool, RATE_SAMPLE_MIN_BYTES, type Handoff, type Link } from "./link-pool.js";

/** A link whose socket is an open, quiet stand-in (the pool only asks it these things). */
function fakeLink(migrationId: string): Link {
  const socket = Object.assign(new EventEmitter(), {
    destroyed: false,
    writable: true,
    readableEnded: false,
    readableLength: 0,
    ref() {},
    unref() {},
    setTimeout() {},
    destroy() {
      socket.destroyed = true;
    },
  });
  return {
    migrationId,
    nonce: new Uint8Array(32),
    hellos: 0,
    socket,
    reader: { decoder: { buffered: 0 } },
    encrypted: true,
    sealer: undefined,
    tuning: undefined,
    handshakeUs: 0,
    batches: 1,
    pendingWireBytes: 0,
  } as unknown as Link;
}

const handoff = (): Handoff => ({ written: Promise.resolve(true), answered: Promise.resolve(true) });

describe("LinkPool lending", () => {
  it("lends a finishing link to the next batch of its migration only, with the handoff to wait on", () => {
    const pool = new LinkPool();
    const link = fakeLink("m1");
    const h = handoff();
    const withdraw = pool.lend("k", link, "m1", h);
    expect(pool.take("k", "m2")).toBeUndefined();
    expect(pool.take("k")).toBeUndefined();
    const taken = pool.take("k", "m1");
    expect(taken).toBe(link);
    expect(taken?.after).toBe(h);
    // Taken: the lender must not give it back to the idle pool.
    expect(withdraw()).toBe(false);
    expect(pool.lentCount("k")).toBe(0);
  });

  it("takes an idle link before a lent one, and a withdrawn lending is gone", () => {
    const pool = new LinkPool();
    const lent = fakeLink("m1");
    const idle = fakeLink("m1");
    const withdraw = pool.lend("k", lent, "m1", handoff());
    pool.give("k", idle, silentLogger);
    expect(pool.take("k", "m1")).toBe(idle);
    expect(withdraw()).toBe(true);
    expect(pool.take("k", "m1")).toBeUndefined();
    pool.closeAll();
  });

  it("does not lend a link whose socket was destroyed meanwhile", () => {
    const pool = new LinkPool();
    const link = fakeLink("m1");
    pool.lend("k", link, "m1", handoff());
    link.socket.destroy();
    expect(pool.take("k", "m1")).toBeUndefined();
  });
});

describe("LinkPool link rates", () => {
  it("keeps the fastest rate of batches large enough to measure the link, and ignores small ones", () => {
    const pool = new LinkPool();
    // A 64 KiB batch that took 10 ms measures its round trips, not the link.
    pool.noteRate("b:1", 64 << 10, 10);
    expect(pool.rateOf("b:1")).toBeUndefined();
    pool.noteRate("b:1", RATE_SAMPLE_MIN_BYTES, 40);
    expect(pool.rateOf("b:1")).toBeCloseTo(RATE_SAMPLE_MIN_BYTES / 0.04);
    pool.noteRate("b:1", RATE_SAMPLE_MIN_BYTES, 400);
    expect(pool.rateOf("b:1")).toBeCloseTo(RATE_SAMPLE_MIN_BYTES / 0.04);
    pool.noteRate("b:1", 8 * RATE_SAMPLE_MIN_BYTES, 0);
    expect(pool.rateOf("b:1")).toBeCloseTo(RATE_SAMPLE_MIN_BYTES / 0.04);
  });
});
