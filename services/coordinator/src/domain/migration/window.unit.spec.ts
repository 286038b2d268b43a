import { describe, expect, it } from "vitest";
import { dispatchWindow, MAX_WINDOW, WINDOW_PER_WEIGHT } from "./window.js";

const MiB = 1024 * 1024;

describe("dispatchWindow", () => {
  it("is proportional to the weight, default weight 1", () => {
    expect(dispatchWindow(1, 64 * MiB)).toBe(WINDOW_PER_WEIGHT);
    expect(dispatchWindow(3, 64 * MiB)).toBe(3 * WINDOW_PER_WEIGHT);
    expect(dispatchWindow(3, 512 * 1024)).toBe(3 * dispatchWindow(1, 512 * 1024));
  });

  it("holds 16 MiB of small batches per unit of weight, and at least four batches", () => {
    expect(dispatchWindow(1, MiB)).toBe(16);
    expect(dispatchWindow(1, 128 * 1024)).toBe(128);
    expect(dispatchWindow(1, 8 * MiB)).toBe(4);
  });

  it("is capped, and never below one weight's worth", () => {
    expect(dispatchWindow(1000, 64 * MiB)).toBe(MAX_WINDOW);
    expect(dispatchWindow(0, 64 * MiB)).toBe(WINDOW_PER_WEIGHT);
  });
});
