import { describe, expect, it } from "vitest";
import { planMirror, WAN_MIRROR_BUFFER, WAN_MIRROR_GRANULARITY } from "./mirror-mode.js";

const plan = (writeBlocking: boolean | undefined, nbdRttUs: number | undefined, compressed = false) =>
  planMirror({ writeBlocking, nbdRttUs, compressed });

describe("mirror plan", () => {
  it("mirrors in the background with QEMU's defaults on a local link and when the round trip is unknown", () => {
    expect(plan(undefined, 80)).toEqual({ copyMode: "background" });
    expect(plan(undefined, 1999, true)).toEqual({ copyMode: "background" });
    expect(plan(undefined, undefined, true)).toEqual({ copyMode: "background" });
  });

  it("blocks guest writes on the mirror across a WAN", () => {
    expect(plan(undefined, 2000)).toEqual({ copyMode: "write-blocking" });
    expect(plan(undefined, 50_000)).toEqual({ copyMode: "write-blocking" });
  });

  it("copies in large granules through a compressing WAN tunnel, 16 of them in flight", () => {
    expect(plan(undefined, 50_000, true)).toEqual({
      copyMode: "write-blocking",
      granularityBytes: WAN_MIRROR_GRANULARITY,
      bufSizeBytes: WAN_MIRROR_BUFFER,
    });
    expect(WAN_MIRROR_BUFFER / WAN_MIRROR_GRANULARITY).toBe(16);
  });

  it("takes the copy mode the migration says, whatever the link", () => {
    expect(plan(false, 50_000, true).copyMode).toBe("background");
    expect(plan(true, 80).copyMode).toBe("write-blocking");
  });
});
