import { describe, expect, it } from "vitest";
import { parseDuration, parseFrom, parseSize, parseTo, UsageError } from "./args.js";

describe("CLI argument parsing", () => {
  it("parses sizes in binary units", () => {
    expect(parseSize("--chunk-size", "4M")).toBe(4 * 1024 * 1024);
    expect(parseSize("--chunk-size", "64KiB")).toBe(65536);
    expect(parseSize("--chunk-size", "65536")).toBe(65536);
    expect(() => parseSize("--chunk-size", "4 parsecs")).toThrow(/--chunk-size must be a size/);
  });
  it("parses --from with kinds and --to", () => {
    expect(parseFrom("a:vm/disk.img,vm/mem.img=memory")).toEqual({
      host: "a",
      volumes: [
        { path: "vm/disk.img", kind: "disk" },
        { path: "vm/mem.img", kind: "memory" },
      ],
    });
    expect(parseTo("b:/srv/in")).toEqual({ host: "b", dir: "/srv/in" });
    expect(() => parseTo("b")).toThrow(UsageError);
    expect(() => parseFrom(":x")).toThrow(/--from must be HOST:PATH/);
  });
  it("parses durations", () => {
    expect(parseDuration("--every", "5m")).toBe(300_000);
    expect(() => parseDuration("--every", "soon")).toThrow(UsageError);
  });
});
