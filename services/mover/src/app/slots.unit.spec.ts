import { describe, expect, it } from "vitest";
import { LargeSlots } from "./slots.js";

/** A batch the test drives: it says when it has sent everything and when it ends. */
function batch(slots: LargeSlots) {
  let sent!: () => void;
  let end!: () => void;
  const task = slots.run(async (s) => {
    sent = s;
    await new Promise<void>((resolve) => (end = resolve));
  });
  return { sent: () => sent(), end: () => end(), task };
}

describe("LargeSlots", () => {
  it("frees a sending slot once its batch has sent everything, and bounds the batches awaiting acks", async () => {
    const slots = new LargeSlots(1);
    expect(slots.room).toBe(1);
    const a = batch(slots);
    expect(slots.room).toBe(0);
    let changed = slots.changed();
    a.sent();
    await changed;
    expect(slots.room).toBe(1);
    const b = batch(slots);
    b.sent();
    await slots.changed();
    // Both have sent: the sending slot is free, but two tails already wait (2 x concurrency).
    expect(slots.room).toBe(0);
    changed = slots.changed();
    a.end();
    await a.task;
    await changed;
    expect(slots.room).toBe(1);
    b.end();
    await b.task;
    expect(slots.room).toBe(1);
  });

  it("frees the slot of a batch that ends without saying it sent (a failure, an in-process copy)", async () => {
    const slots = new LargeSlots(2);
    const a = batch(slots);
    const b = batch(slots);
    expect(slots.room).toBe(0);
    const changed = slots.changed();
    a.end();
    await a.task;
    await changed;
    expect(slots.room).toBe(1);
    b.end();
    await b.task;
    expect(slots.room).toBe(2);
  });

  it("passes the work's failure through and still frees its slot", async () => {
    const slots = new LargeSlots(1);
    const task = slots.run(() => Promise.reject(new Error("batch failed")));
    await expect(task).rejects.toThrow("batch failed");
    expect(slots.room).toBe(1);
  });
});
